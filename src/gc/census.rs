//! [`census`]: the live tracked objects grouped by type, as objgraph's
//! `most_common_types`, and the growth between two censuses, as its
//! `show_growth`.

use std::collections::HashMap;
use std::fmt;

use super::header::GcHeader;
use super::state::with;

/// The live objects of one type in a [`Census`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TypeCount {
    /// The type, as [`std::any::type_name`] spells it.
    pub type_name: &'static str,
    /// Live tracked objects of the type.
    pub count: usize,
    /// Bytes of their `Gc` allocations (header and value, a slice's
    /// elements included; not the heap memory the values own).
    pub bytes: usize,
}

/// The live tracked objects of this thread grouped by type, most common
/// first: what [`census`] returns. `Display` prints it as a table.
///
/// ```
/// use pymem::{gc, Gc};
/// let objs: Vec<_> = (0..3).map(|i| Gc::new(vec![Gc::new(i)])).collect();
/// let c = gc::census();
/// assert!(c.count(std::any::type_name::<Vec<Gc<i32>>>()) >= 3);
/// println!("{c}");
/// # drop(objs);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    types: Vec<TypeCount>,
}

/// The tracked objects of this thread by type, with counts and bytes,
/// most common first (ties by name), as objgraph's `most_common_types`.
///
/// Counts every tracked object (the permanent generation of
/// [`freeze`](crate::gc::freeze) included). Objects of untracked types
/// (those that can hold no `Gc`, such as `Gc<String>`) are not listed, as
/// `gc.get_objects()` does not list atomic objects. Reading it walks the
/// collector's list once. Garbage not yet collected is counted: call
/// [`collect`](crate::gc::collect) first to see only what is reachable.
/// Returns an empty census when called from a `Trace` impl.
///
/// ```
/// use pymem::{gc, Gc, Trace};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Session { peer: RefCell<Option<Gc<Session>>> }
///
/// gc::collect();
/// let before = gc::census();
/// let kept: Vec<_> = (0..10).map(|_| Gc::new(Session { peer: RefCell::new(None) })).collect();
/// let growth = gc::census().growth_since(&before);
/// let top = &growth.entries()[0];
/// assert!(top.type_name.ends_with("Session"));
/// assert_eq!(top.delta, 10);
/// print!("{growth}");
/// # drop(kept);
/// ```
pub fn census() -> Census {
    let mut by_vtable: HashMap<usize, (&'static str, usize, usize)> = HashMap::new();
    with(|st| {
        if st.in_phases() {
            return;
        }
        for i in 0..st.list().len() {
            let p = st.list().get(i);
            if p.is_null() {
                continue;
            }
            // SAFETY: non-null list entries are live tracked objects.
            let vt = unsafe { GcHeader::of(p) }.vtable();
            let e = by_vtable
                .entry(vt as *const _ as usize)
                .or_insert_with(|| ((vt.type_name)(), 0, 0));
            e.1 += 1;
            // SAFETY: `p` is a live tracked object allocated with `vt`
            // (its header's vtable), what `size` requires.
            e.2 += unsafe { (vt.size)(p) };
        }
    });
    // Vtables of one type may be duplicated (one per codegen unit, or the
    // finalizer's): merge by name.
    let mut by_name: HashMap<&'static str, TypeCount> = HashMap::new();
    for (name, count, bytes) in by_vtable.into_values() {
        let e = by_name.entry(name).or_insert(TypeCount {
            type_name: name,
            count: 0,
            bytes: 0,
        });
        e.count += count;
        e.bytes += bytes;
    }
    let mut types: Vec<TypeCount> = by_name.into_values().collect();
    types.sort_by(|a, b| b.count.cmp(&a.count).then(a.type_name.cmp(b.type_name)));
    Census { types }
}

impl Census {
    /// Every type with live objects, most common first.
    ///
    /// ```
    /// let c = pymem::gc::census();
    /// assert!(c.entries().windows(2).all(|w| w[0].count >= w[1].count));
    /// ```
    pub fn entries(&self) -> &[TypeCount] {
        &self.types
    }

    /// The `n` most common types (objgraph's `most_common_types(limit=n)`).
    ///
    /// ```
    /// assert!(pymem::gc::census().most_common(5).len() <= 5);
    /// ```
    pub fn most_common(&self, n: usize) -> &[TypeCount] {
        &self.types[..n.min(self.types.len())]
    }

    /// The entry of a type, by its full name (as `type_name` spells it).
    ///
    /// ```
    /// assert!(pymem::gc::census().get("no::such::Type").is_none());
    /// ```
    pub fn get(&self, type_name: &str) -> Option<&TypeCount> {
        self.types.iter().find(|t| t.type_name == type_name)
    }

    /// Live objects of a type (0 if none), by its full name.
    ///
    /// ```
    /// assert_eq!(pymem::gc::census().count("no::such::Type"), 0);
    /// ```
    pub fn count(&self, type_name: &str) -> usize {
        self.get(type_name).map_or(0, |t| t.count)
    }

    /// Live objects of every type whose name ends with `suffix` (handy
    /// with the short name of a type: `"Session"`, `"::Session"`).
    ///
    /// ```
    /// use pymem::{gc, Gc, Trace};
    /// #[derive(Trace)]
    /// struct Session { peers: Vec<Gc<Session>> }
    /// let s = Gc::new(Session { peers: vec![] });
    /// assert_eq!(gc::census().count_matching("::Session"), 1);
    /// # drop(s);
    /// ```
    pub fn count_matching(&self, suffix: &str) -> usize {
        self.types
            .iter()
            .filter(|t| t.type_name.ends_with(suffix))
            .map(|t| t.count)
            .sum()
    }

    /// Total live tracked objects.
    ///
    /// ```
    /// let c = pymem::gc::census();
    /// assert_eq!(c.total_count(), c.entries().iter().map(|t| t.count).sum::<usize>());
    /// ```
    pub fn total_count(&self) -> usize {
        self.types.iter().map(|t| t.count).sum()
    }

    /// Total bytes of their `Gc` allocations.
    ///
    /// ```
    /// let c = pymem::gc::census();
    /// assert_eq!(c.total_bytes(), c.entries().iter().map(|t| t.bytes).sum::<usize>());
    /// ```
    pub fn total_bytes(&self) -> usize {
        self.types.iter().map(|t| t.bytes).sum()
    }

    /// What changed since `earlier`: the types whose count changed,
    /// largest growth first (objgraph's `show_growth`).
    ///
    /// ```
    /// use pymem::{gc, Gc};
    /// let before = gc::census();
    /// let v: Vec<_> = (0..4).map(|_| Gc::new(Some(Gc::new(0u8)))).collect();
    /// let g = gc::census().growth_since(&before);
    /// assert_eq!(g.delta(std::any::type_name::<Option<Gc<u8>>>()), 4);
    /// # drop(v);
    /// ```
    pub fn growth_since(&self, earlier: &Census) -> CensusGrowth {
        let mut out: Vec<TypeGrowth> = Vec::new();
        for t in &self.types {
            let (c0, b0) = earlier
                .get(t.type_name)
                .map_or((0, 0), |e| (e.count, e.bytes));
            if t.count != c0 {
                out.push(TypeGrowth {
                    type_name: t.type_name,
                    count: t.count,
                    delta: t.count as isize - c0 as isize,
                    bytes_delta: t.bytes as isize - b0 as isize,
                });
            }
        }
        for e in &earlier.types {
            if self.get(e.type_name).is_none() {
                out.push(TypeGrowth {
                    type_name: e.type_name,
                    count: 0,
                    delta: -(e.count as isize),
                    bytes_delta: -(e.bytes as isize),
                });
            }
        }
        out.sort_by(|a, b| b.delta.cmp(&a.delta).then(a.type_name.cmp(b.type_name)));
        CensusGrowth { types: out }
    }
}

/// Shortens `a::b::C<d::E>` to `C<E>` for display.
fn short(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut seg = String::new();
    for ch in name.chars() {
        if ch.is_alphanumeric() || ch == '_' || ch == ':' {
            seg.push(ch);
        } else {
            out.push_str(seg.rsplit("::").next().unwrap_or(""));
            seg.clear();
            out.push(ch);
        }
    }
    out.push_str(seg.rsplit("::").next().unwrap_or(""));
    out
}

impl fmt::Display for Census {
    /// A table: type (short name), count, bytes; then the totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.types.iter().map(|t| short(t.type_name)).collect();
        let w = names.iter().map(|n| n.len()).max().unwrap_or(0).max(4);
        writeln!(f, "{:<w$} {:>10} {:>12}", "type", "objects", "bytes")?;
        for (t, n) in self.types.iter().zip(&names) {
            writeln!(f, "{:<w$} {:>10} {:>12}", n, t.count, t.bytes)?;
        }
        writeln!(
            f,
            "{:<w$} {:>10} {:>12}",
            "total",
            self.total_count(),
            self.total_bytes()
        )
    }
}

/// How one type's count changed between two censuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TypeGrowth {
    /// The type, as [`std::any::type_name`] spells it.
    pub type_name: &'static str,
    /// Live objects now.
    pub count: usize,
    /// Change in the number of live objects (negative: fewer).
    pub delta: isize,
    /// Change in bytes.
    pub bytes_delta: isize,
}

/// The difference between two censuses ([`Census::growth_since`]): the
/// types whose count changed, largest growth first. `Display` prints it
/// as objgraph's `show_growth` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CensusGrowth {
    types: Vec<TypeGrowth>,
}

impl CensusGrowth {
    /// The types whose count changed, largest growth first.
    ///
    /// ```
    /// let c = pymem::gc::census();
    /// assert!(c.growth_since(&c).entries().is_empty());
    /// ```
    pub fn entries(&self) -> &[TypeGrowth] {
        &self.types
    }

    /// The types that grew (positive delta), largest first.
    ///
    /// ```
    /// let c = pymem::gc::census();
    /// assert!(c.growth_since(&c).grown().is_empty());
    /// ```
    pub fn grown(&self) -> &[TypeGrowth] {
        let n = self.types.iter().take_while(|t| t.delta > 0).count();
        &self.types[..n]
    }

    /// The change in count of a type, by full name (0 if unchanged).
    ///
    /// ```
    /// let c = pymem::gc::census();
    /// assert_eq!(c.growth_since(&c).delta("any::Type"), 0);
    /// ```
    pub fn delta(&self, type_name: &str) -> isize {
        self.types
            .iter()
            .find(|t| t.type_name == type_name)
            .map_or(0, |t| t.delta)
    }

    /// The change in count of every type whose name ends with `suffix`.
    ///
    /// ```
    /// let c = pymem::gc::census();
    /// assert_eq!(c.growth_since(&c).delta_matching("::Session"), 0);
    /// ```
    pub fn delta_matching(&self, suffix: &str) -> isize {
        self.types
            .iter()
            .filter(|t| t.type_name.ends_with(suffix))
            .map(|t| t.delta)
            .sum()
    }
}

impl fmt::Display for CensusGrowth {
    /// One line per type: short name, count now, change (`+1000`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.types.iter().map(|t| short(t.type_name)).collect();
        let w = names.iter().map(|n| n.len()).max().unwrap_or(0).max(4);
        writeln!(
            f,
            "{:<w$} {:>10} {:>10} {:>12}",
            "type", "objects", "change", "bytes"
        )?;
        for (t, n) in self.types.iter().zip(&names) {
            writeln!(
                f,
                "{:<w$} {:>10} {:>+10} {:>+12}",
                n, t.count, t.delta, t.bytes_delta
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_names() {
        assert_eq!(super::short("a::b::C<d::E, u8>"), "C<E, u8>");
        assert_eq!(super::short("leak_hunt::Session"), "Session");
    }
}
