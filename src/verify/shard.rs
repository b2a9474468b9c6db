//! Each shard the walk lists, judged against its records, and the work that follows from
//! what is wrong: reads (`-deep`), a look again, a repair; then counted and shown.

use std::collections::{BTreeMap, HashMap};

use anyhow::bail;

use super::{
    judge::{judge, Judged, Kind, Problem, Rules, Seen},
    records::{Pending, Shelf},
    work::{Done, Fix, Fixed, Job, Unfixed},
    Options, Report,
};
use crate::{
    index::State,
    placement::server_of,
    progress::Progress,
    record::Record,
    walk::{Consumer, Findings, Layout, Rep},
};

/// Things found shown one by one, per kind; the rest are counted.
const EXAMPLES: u32 = 5;

/// Counts one off `n`; false when none was left.
fn take_one(n: &mut usize) -> bool {
    let had = *n > 0;
    *n = n.saturating_sub(1);
    had
}

/// A key (or a file no key owns) found wrong, or to be read, on its way through the jobs.
pub(super) struct Item {
    pub(super) key: Box<[u8]>,
    /// The record it was judged against.
    pub(super) seen: Option<(State, Record)>,
    pub(super) problems: Vec<Problem>,
    /// `-deep` reads not back yet.
    pub(super) reads: usize,
    /// `-deep` reads to make.
    pub(super) to_read: Vec<String>,
    /// Looked at again already.
    pub(super) checked: bool,
    /// A file no key owns: its server and path.
    pub(super) junk: Option<(String, String)>,
    /// `-deep` reads of a record with no MD5: each replica of its size and the MD5 read,
    /// compared with each other once all are in.
    pub(super) held: Vec<(String, [u8; 16])>,
}

impl Item {
    /// How a line names the problem `p` of this item.
    fn name(&self, p: &Problem) -> String {
        match &self.junk {
            Some((server, path)) => format!("{server}{path}"),
            None => format!("{} on {}", self.key.escape_ascii(), p.replica),
        }
    }
}

/// The consumer of the walk: each shard judged against its records, and the work that
/// follows from it.
pub(super) struct Verifier<'a> {
    pub(super) opts: &'a Options,
    pub(super) shelf: &'a Shelf,
    pub(super) pending: &'a Pending,
    pub(super) layout: &'a Layout,
    pub(super) progress: &'a Progress,
    pub(super) rules: Rules,
    /// Whether what was found is looked at again before it is reported (the index may
    /// change while the run reads it: online, or in the master's scrub). Repairs look for
    /// themselves, under the key's lock.
    pub(super) recheck: bool,
    pub(super) items: HashMap<usize, Vec<Item>>,
    pub(super) report: Report,
    /// Examples shown so far, per kind.
    pub(super) shown: [u32; 6],
    pub(super) stop: &'a dyn Fn() -> bool,
    /// Replicas on volumes the walk does not list, by volume: not checked.
    pub(super) unwalked: BTreeMap<String, u64>,
}

impl Consumer for Verifier<'_> {
    type Job = Job;
    type Done = Done;

    fn listed(&mut self, s: usize, found: Findings) -> anyhow::Result<Vec<Job>> {
        let entries = self.shelf.take(s)?;
        let Findings { mut keys, mut markers, junk } = found;
        let mut items = Vec::new();
        let (mut live, mut unlinked) = (0, 0);
        for e in entries {
            if e.state == State::Live {
                live += 1;
            } else {
                unlinked += 1;
            }
            let files = self.files_of(keys.remove(&e.key).map(|f| f.reps), markers.remove(&e.key));
            let pending = self.pending.by_key.get(&e.key).map_or(&[][..], |v| &v[..]);
            let j = judge(Some((e.state, &e.rec)), pending, &files, &|r| self.walked(r), &self.rules);
            self.add(&mut items, e.key, Some((e.state, e.rec)), j);
        }
        self.progress.count("live", live);
        self.progress.count("unlinked", unlinked);
        self.report.keys += live + unlinked;
        // what is left has no record
        let mut rest: Vec<Box<[u8]>> = keys.keys().chain(markers.keys()).cloned().collect();
        rest.sort_unstable();
        rest.dedup();
        for key in rest {
            let files = self.files_of(keys.remove(&key).map(|f| f.reps), markers.remove(&key));
            let pending = self.pending.by_key.get(&key).map_or(&[][..], |v| &v[..]);
            let j = judge(None, pending, &files, &|r| self.walked(r), &self.rules);
            self.add(&mut items, key, None, j);
        }
        for j in junk {
            if j.mtime > self.rules.cutoff {
                self.spared(1);
                continue;
            }
            let root = &self.layout.roots[j.root as usize];
            items.push(Item {
                key: Box::default(),
                seen: None,
                problems: vec![Problem { kind: Kind::Orphan, replica: root.name.clone() }],
                reads: 0,
                to_read: Vec::new(),
                checked: true,
                junk: Some((self.layout.volumes[root.server].clone(), j.path)),
                held: Vec::new(),
            });
        }
        let mut jobs = Vec::new();
        for (idx, item) in items.iter_mut().enumerate() {
            for replica in std::mem::take(&mut item.to_read) {
                jobs.push(Job::Read { item: idx as u32, key: item.key.clone(), replica });
            }
        }
        let waiting: Vec<usize> = (0..items.len()).filter(|&i| items[i].reads == 0).collect();
        self.items.insert(s, items);
        jobs.extend(waiting.into_iter().filter_map(|i| self.next(s, i)));
        Ok(jobs)
    }

    fn worked(&mut self, s: usize, done: Done) -> anyhow::Result<Vec<Job>> {
        let idx = match &done {
            Done::Read { item, .. }
            | Done::Checked { item, .. }
            | Done::Repaired { item, .. }
            | Done::Deleted { item, .. } => *item as usize,
        };
        let Some(item) = self.items.get_mut(&s).and_then(|items| items.get_mut(idx)) else {
            bail!("internal error: work done for an item never made");
        };
        match done {
            Done::Read { replica, result, .. } => {
                item.reads -= 1;
                match result {
                    // looked at again like a replica the listing missed: a write explains it
                    Ok(None) => item.problems.push(Problem { kind: Kind::Missing, replica }),
                    Ok(Some((md5, n))) => {
                        let rec = item.seen.as_ref().map(|(_, r)| r);
                        if rec.is_some_and(|r| n != r.size || r.md5.is_some_and(|m| m != md5)) {
                            item.problems.push(Problem { kind: Kind::Corrupt, replica });
                        } else if rec.is_some_and(|r| r.md5.is_none()) {
                            item.held.push((replica, md5));
                        }
                        self.progress.note("replicas read", 1);
                    }
                    Err(why) => {
                        let name = format!("{} on {replica}", item.key.escape_ascii());
                        self.progress.error(&name, &format!("cannot read it: {why}"));
                    }
                }
                if item.reads > 0 {
                    return Ok(Vec::new());
                }
                match outvoted(&std::mem::take(&mut item.held)) {
                    Ok(few) => {
                        item.problems.extend(few.into_iter().map(|replica| Problem { kind: Kind::Corrupt, replica }))
                    }
                    Err(()) => {
                        let name = item.key.escape_ascii().to_string();
                        let why = "its replicas hold different values, none held by most, and its record keeps no MD5 \
                                   to tell which is right: compare them by hand";
                        self.progress.error(&name, why);
                    }
                }
            }
            Done::Checked { result, .. } => match result {
                Ok(still) => item.problems = still,
                Err(why) => {
                    let name = item.key.escape_ascii().to_string();
                    self.progress.error(&name, &format!("cannot look at it again: {why}"));
                    item.problems.clear();
                }
            },
            Done::Repaired { result, .. } => {
                let problems = std::mem::take(&mut item.problems);
                self.repaired(s, idx, problems, result);
                return Ok(Vec::new());
            }
            Done::Deleted { result, .. } => {
                let problems = std::mem::take(&mut item.problems);
                match result {
                    Ok(true) => self.confirm(s, idx, &problems, true),
                    Ok(false) => {}
                    Err(why) => {
                        self.confirm(s, idx, &problems, false);
                        let name = self.items[&s][idx].name(&problems[0]);
                        self.progress.error(&name, &why);
                    }
                }
                return Ok(Vec::new());
            }
        }
        Ok(self.next(s, idx).into_iter().collect())
    }

    fn completed(&mut self, s: usize) -> anyhow::Result<()> {
        self.items.remove(&s);
        Ok(())
    }

    fn stopped(&self) -> bool {
        (self.stop)()
    }
}

/// Of the replicas of a record with no MD5 (`-deep` read them: each one's MD5), those whose
/// bytes are not what most of them hold: damaged, as a record's MD5 would have shown. `Err`
/// when they split with no majority: nothing tells which is right.
fn outvoted(held: &[(String, [u8; 16])]) -> Result<Vec<String>, ()> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let md5s: Vec<[u8; 16]> = held.iter().map(|(_, m)| *m).collect();
    let (most, _) = crate::record::majority(&md5s).ok_or(())?;
    Ok(held.iter().filter(|(_, m)| *m != most).map(|(r, _)| r.clone()).collect())
}

impl Verifier<'_> {
    /// Says which replicas could not be checked (a failure: the run cannot vouch for them).
    pub(super) fn unwalked(&self) {
        if self.unwalked.is_empty() {
            return;
        }
        let n: u64 = self.unwalked.values().sum();
        let on: Vec<&str> = self.unwalked.keys().map(String::as_str).collect();
        self.progress.error(
            &format!("{n} replicas on {}", on.join(", ")),
            "not checked: records name these volumes, but they are not in the list walked",
        );
    }

    /// Whether the volume of `replica` is one the walk lists.
    fn walked(&self, replica: &str) -> bool {
        self.layout.volumes.iter().any(|v| v == server_of(replica))
    }

    /// What each replica folder holds of a key, by replica name.
    fn files_of(&self, values: Option<Vec<Rep>>, markers: Option<Vec<Rep>>) -> Vec<(String, Seen)> {
        let mut out: Vec<(u16, Seen)> = Vec::new();
        for r in values.unwrap_or_default() {
            out.push((r.root, Seen { value: Some((r.size, r.mtime)), marker: None }));
        }
        for m in markers.unwrap_or_default() {
            match out.iter_mut().find(|(root, _)| *root == m.root) {
                Some((_, s)) => s.marker = Some(m.mtime),
                None => out.push((m.root, Seen { value: None, marker: Some(m.mtime) })),
            }
        }
        out.into_iter().map(|(root, s)| (self.layout.roots[root as usize].name.clone(), s)).collect()
    }

    fn spared(&mut self, n: u64) {
        if n > 0 {
            self.report.spared += n;
            self.progress.note(super::SPARED, n);
        }
    }

    /// A judged key: an item when there is something wrong, or something to read.
    fn add(&mut self, items: &mut Vec<Item>, key: Box<[u8]>, seen: Option<(State, Record)>, j: Judged) {
        self.spared(j.spared);
        if let (true, Some((_, rec))) = (j.unchecked > 0, &seen) {
            let off: Vec<String> =
                rec.volumes.iter().filter(|v| !self.walked(v)).map(|v| server_of(v).to_string()).collect();
            for server in off {
                *self.unwalked.entry(server).or_default() += 1;
            }
        }
        if j.problems.is_empty() && j.reads.is_empty() {
            return;
        }
        let reads = j.reads.len();
        let held = Vec::new();
        items.push(Item { key, seen, problems: j.problems, reads, to_read: j.reads, checked: false, junk: None, held });
    }

    /// What item `idx` of shard `s` needs next, now that its reads are back: a look again,
    /// a repair, or nothing more (reported).
    pub(super) fn next(&mut self, s: usize, idx: usize) -> Option<Job> {
        let repair = self.opts.repair;
        let recheck = self.recheck;
        let item = self.items.get_mut(&s)?.get_mut(idx)?;
        if item.problems.is_empty() {
            return None;
        }
        let item_no = idx as u32;
        if let Some((server, path)) = &item.junk {
            if repair {
                return Some(Job::Delete { item: item_no, server: server.clone(), path: path.clone() });
            }
        } else {
            let corrupt = item.problems.iter().any(|p| p.kind == Kind::Corrupt);
            // a repair looks for itself under the key's lock; a read against a record that
            // changed since is no proof, so corrupt replicas are looked at first
            if recheck && !item.checked && (!repair || corrupt) {
                item.checked = true;
                let (key, seen, problems) = (item.key.clone(), item.seen.clone(), item.problems.clone());
                return Some(Job::Check { item: item_no, key, seen, problems });
            }
            if repair {
                let of = |f: fn(Kind) -> bool| -> Vec<String> {
                    let mut v: Vec<String> =
                        item.problems.iter().filter(|p| f(p.kind)).map(|p| p.replica.clone()).collect();
                    v.dedup();
                    v
                };
                let bad = of(Kind::restores);
                let size = item.seen.as_ref().map_or(0, |(_, r)| r.size);
                let fix = Fix {
                    bytes: size * bad.len() as u64,
                    bad,
                    suspects: of(|k| k == Kind::Corrupt),
                    orphans: of(Kind::removes),
                    markers: item.problems.iter().any(|p| p.kind == Kind::Marker),
                };
                return Some(Job::Repair { item: item_no, key: item.key.clone(), fix });
            }
        }
        let problems = std::mem::take(&mut item.problems);
        self.confirm(s, idx, &problems, false);
        None
    }

    /// What a repair's answer says of each problem: fixed, gone by itself (the key was
    /// written or deleted meanwhile: not damage), or still there.
    fn repaired(&mut self, s: usize, idx: usize, problems: Vec<Problem>, result: Result<Fixed, Unfixed>) {
        let key = self.items[&s][idx].key.escape_ascii().to_string();
        let f = match result {
            Ok(f) => f,
            Err(Unfixed::Gone) => return,
            Err(Unfixed::NoGoodReplica) => {
                self.confirm(s, idx, &problems, false);
                self.progress.error(&key, "no replica holds its value (size and MD5): left as it is");
                return;
            }
            Err(Unfixed::Failed(why)) => {
                self.confirm(s, idx, &problems, false);
                self.progress.error(&key, &format!("not repaired: {why}"));
                return;
            }
        };
        if f.adopted {
            // a repair, not a failure; said, as the record changed and not the files
            let why = "no replica held the record's value and every replica held one other: the record now names it";
            self.progress.println(&format!("{}: {key}: {why}", self.progress.label()));
        }
        let (mut markers, mut orphans) = (f.markers, f.orphans);
        let (mut fixed, mut left) = (Vec::new(), Vec::new());
        for p in problems {
            let done = match p.kind {
                k if k.restores() => {
                    if f.skipped.contains(&p.replica) {
                        left.push(p);
                        continue;
                    }
                    f.restored.contains(&p.replica)
                }
                Kind::Marker => take_one(&mut markers),
                _ => take_one(&mut orphans),
            };
            if done {
                fixed.push(p);
            }
        }
        self.confirm(s, idx, &fixed, true);
        if !left.is_empty() {
            self.confirm(s, idx, &left, false);
            let on: Vec<&str> = left.iter().map(|p| p.replica.as_str()).collect();
            self.progress.error(&key, &format!("not repaired on {}: the volume did not answer", on.join(",")));
        }
    }

    /// Problems that are real: counted per kind, the first few of each shown.
    fn confirm(&mut self, s: usize, idx: usize, problems: &[Problem], fixed: bool) {
        for p in problems {
            let name = self.items[&s][idx].name(p);
            self.count(p.kind, &name, fixed);
        }
    }

    /// A damaged replica of an S3 upload's part (`name` says which), counted as a key's.
    pub(super) fn confirm_part(&mut self, kind: Kind, name: &str, fixed: bool) {
        self.count(kind, name, fixed);
    }

    fn count(&mut self, kind: Kind, name: &str, fixed: bool) {
        let k = kind.index();
        self.report.found[k] += 1;
        self.progress.note(kind.name(), 1);
        if self.opts.repair {
            self.progress.note(if fixed { "repaired" } else { "not repaired" }, 1);
        }
        if fixed {
            self.report.fixed += 1;
        }
        self.shown[k] += 1;
        if self.shown[k] <= EXAMPLES {
            let done = if fixed { " (repaired)" } else { "" };
            self.progress.println(&format!("{}: {}: {name}{done}", self.progress.label(), kind.name()));
        } else if self.shown[k] == EXAMPLES + 1 {
            let more = format!("{}: more {} are only counted", self.progress.label(), kind.name());
            self.progress.println(&more);
        }
    }
}
