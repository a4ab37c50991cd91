//! A contender's processes: the one the run started and every process it
//! started in turn (`mpsync lock`, its watchdog, the command), read from
//! `/proc`, for the faults that aim at one of them or at all of them.

use std::process::Stdio;

/// The name of the command `mpsync lock` runs (`/proc/PID/comm`).
pub const WORKER: &str = "chaos-worker";

/// Sends signal `name` (`KILL`, `STOP`, `CONT`, `TERM`) to `pid`.
pub fn signal(pid: u32, name: &str) {
    let _ =
        std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// `pid`'s parent, from `/proc/PID/stat` (its name, in parentheses, may
/// hold spaces and parentheses: the fields after the last `)` are the
/// state, then the parent).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// `pid`'s name (`/proc/PID/comm`).
fn name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|n| n.trim_end().to_owned())
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent(*p) == Some(pid))
        .collect()
}

/// Appends those of `more` not in `list` yet (a pid reused while the tree
/// is read must not make it endless).
fn add_new(list: &mut Vec<u32>, more: Vec<u32>) {
    for p in more {
        if !list.contains(&p) {
            list.push(p);
        }
    }
}

/// `pid` and every process below it, parents before children.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let below = children(all[i]);
        add_new(&mut all, below);
        i += 1;
    }
    all
}

/// The command `mpsync lock` runs below `pid`, if it runs now.
pub fn worker_below(pid: u32) -> Option<u32> {
    tree(pid).into_iter().skip(1).find(|p| name(*p).as_deref() == Some(WORKER))
}

/// SIGSTOPs `pid` and every process below it, each parent before its
/// children are listed (a stopped parent starts no new one); returns them
/// in that order, for [`resume`].
pub fn freeze_tree(pid: u32) -> Vec<u32> {
    let mut stopped = vec![pid];
    let mut i = 0;
    while i < stopped.len() {
        signal(stopped[i], "STOP");
        let below = children(stopped[i]);
        add_new(&mut stopped, below);
        i += 1;
    }
    stopped
}

/// SIGCONTs `frozen` in the order given.
pub fn resume(frozen: &[u32]) {
    frozen.iter().for_each(|p| signal(*p, "CONT"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_tree_is_read_from_proc() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        assert!(tree(me).contains(&child.id()));
        assert_eq!(parent(child.id()), Some(me));
        assert_eq!(name(child.id()).as_deref(), Some("sleep"));
        assert_eq!(worker_below(me), None);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
