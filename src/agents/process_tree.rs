//! Killing everything a program started. A program runs in its own process group, but a
//! child that calls `setsid` (daemons, `setsid cmd &`) leaves the group and would outlive a
//! group kill: the tree of descendants, read from `/proc`, is killed too.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Kills the process group `leader` leads and every descendant of `leader`, wherever its
/// group or session. The tree is stopped first, then killed, so a process that forks while it
/// is being killed does not leave a child behind.
pub(super) fn kill_tree(leader: i32) {
    let group = Pid::from_raw(leader);
    // Read while the parents live: a killed parent's children are reparented and lost.
    let mut tree = descendants(leader);
    let _ = killpg(group, Signal::SIGSTOP);
    for &pid in &tree {
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
    }
    // Children forked before the stop took hold.
    for pid in descendants(leader) {
        if !tree.contains(&pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
            tree.push(pid);
        }
    }
    let _ = killpg(group, Signal::SIGKILL);
    for pid in tree {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Every process below `root`, by parent links (not groups), read from `/proc`.
fn descendants(root: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(i32, i32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, parent(pid)?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let of = found[i];
        found.extend(parents.iter().filter(|(_, p)| *p == of).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// The parent of a process: the 2nd field after the command name in `/proc/PID/stat`.
fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_this_process_is_read() {
        let me = std::process::id() as i32;
        assert!(parent(me).is_some_and(|p| p > 0));
        assert!(!descendants(1).is_empty());
    }
}
