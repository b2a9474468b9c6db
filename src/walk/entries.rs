//! What one listing adds to the walk: the folders it names, queued once each and within
//! the walk's bounds, and the files it names, turned back into keys and their replicas.

use super::volumes::{hash_prefix, parse_xx, recover_merged, Entry, Spent, LISTING_MAX, MAX_ENTRIES, SHARDS};
use super::{subtree, Found, Junk, ListJob, Rep, Walk, QUEUE_MAX, REFUSED};
use crate::placement;

/// Longest name (nested folders joined) walked: a symlink loop ends here.
const MAX_WALK: usize = 4096;
/// Most entries listed below one `xx/yy` folder of a root, its nested folders included. A
/// key whose base64 has `/` adds a folder entry or a few beside its file, so a real folder
/// holds at most a few times MAX_ENTRIES; a symlink loop or a volume that makes up folders
/// would be walked without end.
const SUBTREE_MAX: u32 = 4 * MAX_ENTRIES as u32;
/// Work one listing may spend putting merged slashes back into its names (bytes of
/// candidates built, decoded and hashed): no more than reading the largest listing costs.
const RECOVER_MAX: usize = LISTING_MAX;
/// Files that are no key's kept per shard (for a verify): a hostile volume could name
/// millions; the rest are still counted as strays.
const JUNK_MAX: usize = 4096;
/// Stray and failure text for a name a listing has twice.
const TWICE: &str = "listed twice";

impl Walk<'_> {
    /// Counts a listing against its subtree's SUBTREE_MAX, then walks its entries.
    pub(super) fn take_listing(&mut self, job: &ListJob, entries: &[Entry<'_>]) {
        if job.depth > 0 {
            let used = self.shards[job.shard as usize].subtrees.entry(subtree(job)).or_insert(0);
            *used = used.saturating_add(entries.len() as u32);
            if *used > SUBTREE_MAX {
                *used = REFUSED;
                let why = format!(
                    "more than {SUBTREE_MAX} entries below this folder (at {}: folders in a loop?); the rest of it \
                     is not listed",
                    &job.dir[job.name_at..]
                );
                return self.refuse(job, &job.dir[..job.name_at], &why);
            }
        }
        self.walk_entries(job, entries)
    }

    fn walk_entries(&mut self, job: &ListJob, entries: &[Entry<'_>]) {
        if job.depth == 0 {
            return self.walk_xx(job, entries);
        }
        // folders are queued once the listing is read, each name once
        let mut dirs: Vec<&str> = Vec::new();
        let mut budget = RECOVER_MAX;
        let mut spent = false;
        for e in entries {
            let name_len = job.dir.len() - job.name_at + e.name.len();
            if e.kind == "directory" {
                let ok = !e.name.is_empty()
                    && e.name.len() <= placement::MAX_NAME
                    && e.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+')
                    && name_len < MAX_WALK;
                if ok {
                    dirs.push(&e.name);
                } else {
                    self.stray(job, &e.name, "a folder no base64 name makes");
                }
            } else if e.kind == "file" {
                let mut name = String::with_capacity(name_len);
                name.push_str(&job.dir[job.name_at..]);
                name.push_str(&e.name);
                let rep = Rep { root: job.root, size: e.size, mtime: e.mtime() };
                spent |= self.found(job, &name, rep, &mut budget);
            } else {
                self.stray(job, &e.name, "neither a file nor a folder");
            }
        }
        if spent {
            let why = format!("its names cost more than {} MiB of work to put merged slashes back", RECOVER_MAX >> 20);
            self.refuse(job, &job.dir, &why);
        }
        if dirs.is_empty() {
            return;
        }
        dirs.sort_unstable();
        for run in dirs.chunk_by(|a, b| a == b) {
            let name = run[0];
            self.repeated(job, name, run.len() as u32);
            let dir = format!("{}{name}/", job.dir);
            if !self.queue_learned(ListJob { dir, depth: job.depth + 1, ..*job }) {
                return self.queue_full(job);
            }
        }
    }

    /// `xx/`: only `yy` folders belong here, each once.
    fn walk_xx(&mut self, job: &ListJob, entries: &[Entry<'_>]) {
        let mut seen = [0u32; SHARDS];
        for e in entries {
            match parse_xx(&e.name).filter(|_| e.kind == "directory") {
                Some(yy) if seen[yy as usize] > 0 => seen[yy as usize] += 1,
                Some(yy) => {
                    seen[yy as usize] = 1;
                    let dir = format!("{}{}/", job.dir, e.name);
                    let name_at = dir.len();
                    if !self.queue_learned(ListJob { yy, dir, name_at, depth: 1, ..*job }) {
                        return self.queue_full(job);
                    }
                }
                // not in a key folder: no one's to judge (README: never counted, reported
                // or deleted); it was taken for an orphan and `-repair` deleted it
                None => self.stray(job, &e.name, "not a two-hex-digit folder"),
            }
        }
        for (yy, n) in seen.into_iter().enumerate().filter(|(_, n)| *n > 1) {
            self.repeated(job, &format!("{yy:02x}"), n);
        }
    }

    fn queue_full(&mut self, job: &ListJob) {
        let why = format!(
            "more folders wait to be listed than the walk holds ({} MiB of them); the rest of its folders are not listed",
            QUEUE_MAX >> 20
        );
        self.refuse(job, &job.dir, &why);
    }

    /// A file named `name` (base64, nested folders joined) in `xx/yy/` of a root. True when
    /// `budget` could not pay for putting merged slashes back into it.
    fn found(&mut self, job: &ListJob, name: &str, rep: Rep, budget: &mut usize) -> bool {
        let (xx, yy) = (job.shard, job.yy);
        let shard = &mut self.shards[xx as usize].found;
        let decoded = placement::decode_name(name);
        if !job.marker {
            if let Some(f) = decoded.as_deref().and_then(|k| shard.keys.get_mut(k)) {
                if f.yy == yy {
                    if !add_replica(&mut f.reps, rep) {
                        self.stray_file(job, name, TWICE);
                    }
                    return false;
                }
            }
        }
        let key = match decoded.filter(|k| hash_prefix(k) == [xx, yy]) {
            Some(k) => k,
            None => match recover_merged(name, [xx, yy], budget) {
                Ok(Some(k)) => k,
                Ok(None) => {
                    self.no_key(job, name, rep.mtime, "not the base64 of a key hashing to its folder");
                    return false;
                }
                Err(Spent) => {
                    self.no_key(job, name, rep.mtime, "not the base64 of a key hashing to its folder (not all tried)");
                    return true;
                }
            },
        };
        let shard = &mut self.shards[xx as usize].found;
        if job.marker {
            // replicas on several volumes each have a marker; a root listed twice counts once
            let roots = shard.markers.entry(key.into_boxed_slice()).or_default();
            if !roots.iter().any(|r| r.root == rep.root) {
                roots.push(rep);
            }
        } else {
            let f =
                shard.keys.entry(key.into_boxed_slice()).or_insert_with(|| Found { yy, reps: Vec::with_capacity(3) });
            if !add_replica(&mut f.reps, rep) {
                self.stray_file(job, name, TWICE);
            }
        }
        false
    }

    /// A file in the tree that is no key's (`path` on its server): kept with its time, so
    /// that a verify can tell an old one (an orphan) from one being written. False when it
    /// is not kept (a walk that keeps none, or too many kept): then it is only a stray.
    fn junk(&mut self, job: &ListJob, path: String, mtime: i64) -> bool {
        let junk = &mut self.shards[job.shard as usize].found.junk;
        let keep = self.keep_junk && junk.len() < JUNK_MAX;
        if keep {
            junk.push(Junk { root: job.root, path, mtime });
        }
        keep
    }

    /// A file in a key folder that no key makes: judged as an orphan (or spared as a young
    /// one) by a verify that keeps it, ignored by a walk that does not.
    fn no_key(&mut self, job: &ListJob, name: &str, mtime: i64, why: &str) {
        if !self.junk(job, format!("{}{name}", &job.dir[..job.name_at]), mtime) {
            self.stray_file(job, name, why);
        }
    }

    fn stray(&mut self, job: &ListJob, name: &str, why: &str) {
        self.strays(job, name, why, 1);
    }

    /// A file [`Self::found`] judged: its name runs from the key folder (`job.name_at`),
    /// not from the folder listed.
    fn stray_file(&mut self, job: &ListJob, name: &str, why: &str) {
        self.strays_in(job, &job.dir[..job.name_at], name, why, 1);
    }

    /// `n` entries of a listing ignored for the same reason, shown as one.
    fn strays(&mut self, job: &ListJob, name: &str, why: &str, n: u64) {
        self.strays_in(job, &job.dir, name, why, n);
    }

    fn strays_in(&mut self, job: &ListJob, dir: &str, name: &str, why: &str, n: u64) {
        self.progress.note("strays", n);
        let root = &self.layout.roots[job.root as usize];
        let server = &self.layout.volumes[root.server];
        self.warn(&format!("ignoring {server}{dir}{name}: {why}"));
    }

    /// A folder name a listing has `n` times: walked once, the other times strays.
    fn repeated(&mut self, job: &ListJob, name: &str, n: u32) {
        if n > 1 {
            self.strays(job, name, &format!("listed {n} times, walked once"), u64::from(n) - 1);
        }
    }
}

/// Adds a replica, unless the key has one on its root already (a listing that names a
/// file twice): false then.
fn add_replica(reps: &mut Vec<Rep>, rep: Rep) -> bool {
    if reps.iter().any(|r| r.root == rep.root) {
        return false;
    }
    reps.push(rep);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_counts_once_per_root() {
        let rep = |root, size| Rep { root, size, mtime: 0 };
        let mut reps = Vec::new();
        assert!(add_replica(&mut reps, rep(2, 10)));
        assert!(add_replica(&mut reps, rep(0, 10)));
        assert!(!add_replica(&mut reps, rep(2, 11)));
        assert_eq!(reps, [rep(2, 10), rep(0, 10)]);
    }
}
