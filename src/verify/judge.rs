//! What is wrong with one key's files, judged against its record. Pure: the walk, the
//! re-check of what it found and the unit tests below share one set of rules.

use crate::{index::State, record::Record};

/// A kind of damage, as the summary counts it (one per file, or per replica folder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The record names a replica whose file is not there.
    Missing,
    /// The file is there with another size than the record's.
    Size,
    /// `-deep`: the file's bytes do not have the record's MD5.
    Corrupt,
    /// A file (or unlink marker) of the key on a replica its record does not name.
    Outside,
    /// An unlink marker beside a live key's replica, or none beside an unlinked key's.
    Marker,
    /// A file no record names: a deleted key's, a `_tmp` file left behind, or one that is
    /// no key's at all.
    Orphan,
}

pub const KINDS: [Kind; 6] = [Kind::Missing, Kind::Size, Kind::Corrupt, Kind::Outside, Kind::Marker, Kind::Orphan];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Size => "size mismatch",
            Kind::Corrupt => "corrupt",
            Kind::Outside => "outside record",
            Kind::Marker => "markers wrong",
            Kind::Orphan => "orphans",
        }
    }

    pub fn index(self) -> usize {
        KINDS.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// Whether a repair copies the value again for it.
    pub fn restores(self) -> bool {
        matches!(self, Kind::Missing | Kind::Size | Kind::Corrupt)
    }

    /// Whether a repair deletes files for it.
    pub fn removes(self) -> bool {
        matches!(self, Kind::Outside | Kind::Orphan)
    }
}

/// One thing wrong with a key, on one replica (`host:port[/svXX]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: Kind,
    pub replica: String,
}

/// What the listings show of a key in one replica folder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The value's file: size and time (Unix seconds).
    pub value: Option<(u64, i64)>,
    /// The unlink marker's time.
    pub marker: Option<i64>,
}

/// The rules of one run.
pub struct Rules {
    /// Files modified after this (Unix seconds) are younger than `-grace`: a write may be
    /// in flight, so they are spared.
    pub cutoff: i64,
    pub deep: bool,
}

/// The verdict on one key.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Judged {
    pub problems: Vec<Problem>,
    /// Replicas to read whole (`-deep`): there, of the right size, with an MD5 to check (or,
    /// with none, beside others to compare with).
    pub reads: Vec<String>,
    /// Files that would be wrong but are younger than the grace.
    pub spared: u64,
    /// Replicas on volumes not walked (not in the volume list): not checked.
    pub unchecked: u64,
}

/// Judges a key: its record (if any), the replicas a replacement being written names
/// (`pending`), and what each replica folder where something of it was found holds.
/// `walked` says whether a replica's volume was listed.
pub fn judge(
    rec: Option<(State, &Record)>,
    pending: &[String],
    files: &[(String, Seen)],
    walked: &dyn Fn(&str) -> bool,
    rules: &Rules,
) -> Judged {
    let mut j = Judged::default();
    let young = |t: i64| t > rules.cutoff;
    let wrong = |j: &mut Judged, kind, replica: &str| j.problems.push(Problem { kind, replica: replica.to_string() });
    let seen = |r: &str| files.iter().find(|(n, _)| n == r).map(|(_, s)| *s).unwrap_or_default();
    let Some((state, rec)) = rec else {
        for (r, s) in files.iter().filter(|(r, _)| !pending.contains(r)) {
            if young(newest(s)) {
                j.spared += 1;
            } else {
                wrong(&mut j, Kind::Orphan, r);
            }
        }
        return j;
    };
    let unfinished = state.holds_unfinished(rec);
    for v in &rec.volumes {
        if !walked(v) {
            j.unchecked += 1;
            continue;
        }
        if unfinished {
            continue;
        }
        let s = seen(v);
        match s.value {
            None => wrong(&mut j, Kind::Missing, v),
            Some((size, _)) if size != rec.size => wrong(&mut j, Kind::Size, v),
            // with no MD5 the replicas are compared with each other (see `shard::outvoted`)
            Some(_) if rules.deep && (rec.md5.is_some() || rec.volumes.len() > 1) => j.reads.push(v.clone()),
            Some(_) => {}
        }
        match (state, s.marker) {
            // a replica copied again gets its marker with it: only a marker alone is counted
            (State::Unlinked, None) if s.value.is_some() => wrong(&mut j, Kind::Marker, v),
            // UNLINK writes its markers before it moves the record
            (State::Live, Some(t)) if young(t) => j.spared += 1,
            (State::Live, Some(_)) => wrong(&mut j, Kind::Marker, v),
            _ => {}
        }
    }
    for (r, s) in files.iter().filter(|(r, _)| !rec.volumes.contains(r) && !pending.contains(r)) {
        // a rebalance copies to the new replicas before the record names them
        if young(newest(s)) {
            j.spared += 1;
        } else {
            wrong(&mut j, Kind::Outside, r);
        }
    }
    j
}

/// The latest time of what a folder holds of a key.
fn newest(s: &Seen) -> i64 {
    s.value.map_or(i64::MIN, |v| v.1).max(s.marker.unwrap_or(i64::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: i64 = 1000;
    const NEW: i64 = 3000;
    const RULES: Rules = Rules { cutoff: 2000, deep: false };

    fn rec(volumes: &[&str]) -> Record {
        Record {
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
            size: 5,
            md5: Some([1; 16]),
            mtime: 9,
            ..Record::default()
        }
    }

    fn value(size: u64, t: i64) -> Seen {
        Seen { value: Some((size, t)), marker: None }
    }

    fn files(list: &[(&str, Seen)]) -> Vec<(String, Seen)> {
        list.iter().map(|(r, s)| (r.to_string(), *s)).collect()
    }

    fn kinds(j: &Judged) -> Vec<(Kind, &str)> {
        j.problems.iter().map(|p| (p.kind, p.replica.as_str())).collect()
    }

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn a_whole_key_is_fine() {
        let r = rec(&["a", "b"]);
        let f = files(&[("a", value(5, OLD)), ("b", value(5, NEW))]);
        assert_eq!(judge(Some((State::Live, &r)), &[], &f, &all, &RULES), Judged::default());
        let deep = Rules { deep: true, ..RULES };
        assert_eq!(judge(Some((State::Live, &r)), &[], &f, &all, &deep).reads, ["a", "b"]);
    }

    #[test]
    fn missing_short_and_outside() {
        let r = rec(&["a", "b", "c"]);
        let f = files(&[("a", value(5, OLD)), ("b", value(4, OLD)), ("d", value(5, OLD)), ("e", value(5, NEW))]);
        let j = judge(Some((State::Live, &r)), &[], &f, &all, &RULES);
        assert_eq!(kinds(&j), [(Kind::Size, "b"), (Kind::Missing, "c"), (Kind::Outside, "d")]);
        assert_eq!(j.spared, 1, "e is younger than the grace");
        // a replacement being written names e
        let j = judge(Some((State::Live, &r)), &["d".to_string()], &f, &all, &RULES);
        assert_eq!(kinds(&j), [(Kind::Size, "b"), (Kind::Missing, "c")]);
        // c's volume was not walked: not judged
        let j = judge(Some((State::Live, &r)), &[], &f, &|v| v != "c", &RULES);
        assert_eq!((j.problems.len(), j.unchecked), (2, 1));
    }

    #[test]
    fn markers_follow_the_state() {
        let r = rec(&["a", "b"]);
        let marked = |t| Seen { value: Some((5, OLD)), marker: Some(t) };
        let f = files(&[("a", marked(OLD)), ("b", value(5, OLD))]);
        assert_eq!(kinds(&judge(Some((State::Unlinked, &r)), &[], &f, &all, &RULES)), [(Kind::Marker, "b")]);
        assert_eq!(kinds(&judge(Some((State::Live, &r)), &[], &f, &all, &RULES)), [(Kind::Marker, "a")]);
        let f = files(&[("a", marked(NEW)), ("b", value(5, OLD))]);
        let j = judge(Some((State::Live, &r)), &[], &f, &all, &RULES);
        assert_eq!((j.problems.len(), j.spared), (0, 1), "an UNLINK in flight");
        // an unlinked key's missing replica is one problem: its marker comes back with it
        let f = files(&[("a", marked(OLD))]);
        assert_eq!(kinds(&judge(Some((State::Unlinked, &r)), &[], &f, &all, &RULES)), [(Kind::Missing, "b")]);
        // a marker on a replica the record does not name
        let f = files(&[("a", marked(OLD)), ("b", marked(OLD)), ("c", Seen { value: None, marker: Some(OLD) })]);
        assert_eq!(kinds(&judge(Some((State::Unlinked, &r)), &[], &f, &all, &RULES)), [(Kind::Outside, "c")]);
    }

    #[test]
    fn orphans_and_writes_in_flight() {
        let f = files(&[("a", value(5, OLD)), ("b", Seen { value: None, marker: Some(OLD) }), ("c", value(5, NEW))]);
        let j = judge(None, &[], &f, &all, &RULES);
        assert_eq!(kinds(&j), [(Kind::Orphan, "a"), (Kind::Orphan, "b")]);
        assert_eq!(j.spared, 1);
        // a PUT's first step: recorded unlinked with nothing known yet; its files are its own
        let first = Record { volumes: vec!["a".into(), "b".into()], ..Record::default() };
        assert!(State::Unlinked.holds_unfinished(&first));
        let j = judge(Some((State::Unlinked, &first)), &[], &files(&[("a", value(3, OLD))]), &all, &RULES);
        assert_eq!(j, Judged::default());
    }
}
