//! CPU time and memory of a process tree, from Linux's /proc (proc(5)): the server under
//! test (its pid and every live descendant, e.g. Nginx's master and workers) and this
//! generator. Read only between steps, so its cost never lands in a measurement.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// Clock ticks per second of /proc's CPU fields. The kernel reports them in USER_HZ, which
/// is 100 on every architecture Linux supports for user space (proc(5), times(2)).
const USER_HZ: f64 = 100.0;

/// One sample of a process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TreeSample {
    /// utime + stime + cutime + cstime of every process in the tree, in seconds: reaped
    /// children count through their parent's cutime/cstime, live ones by their own entries.
    pub(crate) cpu_s: f64,
    /// Sum of VmRSS, KiB (pages shared between processes count once per process).
    pub(crate) rss_kib: u64,
    /// Sum of Pss (shared pages split between their users), KiB; 0 where unreadable.
    pub(crate) pss_kib: u64,
    /// Pages held by memory files (memfd) the tree has open, each file once, KiB: memory
    /// outside RSS until mapped (rtmp-hls keeps segments in them).
    pub(crate) memfd_kib: u64,
    /// Processes in the tree.
    pub(crate) processes: usize,
}

/// The fields after the command name of /proc/<pid>/stat (the name may hold spaces and
/// parentheses, so split after the last ')'). Index 0 is field 3, `state`.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect())
}

/// Index in [`stat_fields`] of field `n` (1-based, as proc(5) numbers them), for n ≥ 4.
const fn field(n: usize) -> usize {
    n - 4
}
const PPID: usize = field(4);
const UTIME: usize = field(14);
const CSTIME: usize = field(17);

fn cpu_ticks(fields: &[u64]) -> u64 {
    fields.get(UTIME..=CSTIME).map_or(0, |f| f.iter().sum())
}

fn status_kib(pid: &str, file: &str, name: &str) -> u64 {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/{file}")) else { return 0 };
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Samples `root` and its live descendants; `None` if `root` is gone.
pub(crate) fn sample_tree(root: u32) -> Option<TreeSample> {
    let root_fields = stat_fields(&root.to_string())?;
    let mut children: HashMap<u64, Vec<(String, Vec<u64>)>> = HashMap::new();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == root.to_string() {
            continue;
        }
        if let Some(fields) = stat_fields(&name)
            && let Some(&ppid) = fields.get(PPID)
        {
            children.entry(ppid).or_default().push((name, fields));
        }
    }
    let mut sample = TreeSample::default();
    let mut memfds = std::collections::HashSet::new();
    let mut ticks = 0;
    let mut stack = vec![(root.to_string(), root_fields)];
    while let Some((pid, fields)) = stack.pop() {
        ticks += cpu_ticks(&fields);
        sample.rss_kib += status_kib(&pid, "status", "VmRSS:");
        sample.pss_kib += status_kib(&pid, "smaps_rollup", "Pss:");
        sample.memfd_kib += memfd_kib(&pid, &mut memfds);
        sample.processes += 1;
        if let Ok(id) = pid.parse::<u64>()
            && let Some(kids) = children.remove(&id)
        {
            stack.extend(kids);
        }
    }
    sample.cpu_s = ticks as f64 / USER_HZ;
    Some(sample)
}

/// Allocated size of the memory files `pid` has open that are not in `seen` yet, KiB.
fn memfd_kib(pid: &str, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    let mut bytes = 0;
    for fd in fds.flatten() {
        let is_memfd = fs::read_link(fd.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("/memfd:"));
        // The link resolves to the file itself; blocks count its pages, holes excluded.
        if is_memfd
            && let Ok(meta) = fs::metadata(fd.path())
            && seen.insert((meta.dev(), meta.ino()))
        {
            bytes += meta.blocks() * 512;
        }
    }
    bytes / 1024
}

/// The whole machine's CPU time since boot, from the `cpu` line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct MachineCpu {
    /// user + nice + system + irq + softirq, seconds (guest time is inside user).
    pub(crate) busy_s: f64,
    /// Time the hypervisor gave this VM's CPUs to others, seconds.
    pub(crate) steal_s: f64,
}

/// Samples the machine's CPU time; `None` where /proc/stat is unreadable.
pub(crate) fn machine_cpu() -> Option<MachineCpu> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    // Fields: user nice system idle iowait irq softirq steal (proc(5)).
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?;
    Some(MachineCpu { busy_s: busy as f64 / USER_HZ, steal_s: *f.get(7)? as f64 / USER_HZ })
}

/// Directory levels [`dir_kib`] descends: Nginx-RTMP's `hls_nested` adds one.
const MAX_DIR_DEPTH: usize = 4;

/// Total size of the files under `dir`, KiB: what a server keeps on tmpfs is memory too.
pub(crate) fn dir_kib(dir: &Path) -> u64 {
    fn walk(dir: &Path, depth: usize) -> u64 {
        let Ok(entries) = fs::read_dir(dir) else { return 0 };
        let mut bytes = 0;
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_file() => bytes += m.len(),
                Ok(m) if m.is_dir() && depth < MAX_DIR_DEPTH => {
                    bytes += walk(&entry.path(), depth + 1)
                }
                _ => {}
            }
        }
        bytes
    }
    walk(dir, 0) / 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_a_tree_with_cpu_and_memory() {
        let before = sample_tree(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let sample = sample_tree(std::process::id()).unwrap();
        assert!(sample.processes >= 1);
        assert!(sample.rss_kib > 0);
        // 20 M multiply-adds take tens of milliseconds: more than one clock tick of CPU.
        assert!(sample.cpu_s > before.cpu_s, "{} then {}", before.cpu_s, sample.cpu_s);
    }

    #[test]
    fn memory_files_are_counted_once() {
        use std::io::Write as _;
        let fd =
            rustix::fs::memfd_create("procstat-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let mut file = fs::File::from(fd);
        file.write_all(&vec![7; 1 << 20]).unwrap();
        let again = file.try_clone().unwrap();
        let sample = sample_tree(std::process::id()).unwrap();
        // 1 MiB written, counted once though open twice (up to a huge page more where
        // shared memory uses them).
        assert!(sample.memfd_kib >= 1024 && sample.memfd_kib < 4096, "{}", sample.memfd_kib);
        drop((file, again));
    }

    #[test]
    fn files_under_a_directory_are_summed() {
        let dir = std::env::temp_dir().join(format!("procstat-dir-{}", std::process::id()));
        fs::create_dir_all(dir.join("nested")).unwrap();
        fs::write(dir.join("a.ts"), vec![0u8; 4096]).unwrap();
        fs::write(dir.join("nested").join("b.ts"), vec![0u8; 8192]).unwrap();
        assert_eq!(dir_kib(&dir), 12);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(dir_kib(&dir), 0);
    }

    #[test]
    fn the_machine_has_cpu_time() {
        let cpu = machine_cpu().unwrap();
        assert!(cpu.busy_s > 0.0 && cpu.steal_s >= 0.0);
    }

    #[test]
    fn a_missing_process_has_no_sample() {
        assert_eq!(sample_tree(u32::MAX), None);
    }
}
