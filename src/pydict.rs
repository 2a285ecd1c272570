//! A simulation of the CPython 2.7 dict, for the orders in which the
//! legacy code went through its dicts: the matched variables, a
//! `generate()` model, the `var` dict of a configure script.
//!
//! After matching, the legacy code renames each `$x` key to `x` while
//! iterating over the same dict. Inserting may resize the table mid-loop,
//! and the iteration then skips some keys: those `$$` variables stay `$x`
//! and are not forced. Which ones depends on string hashes, table size and
//! the history of insertions and deletions, so this module replays them on
//! a copy of CPython's table (open addressing, perturbation probing).
//! Hash randomisation is off in Python 2.7 by default.
use std::collections::BTreeMap;

use crate::hw::HwValue;
use crate::literal::Value;

const MINSIZE: usize = 8;
const PERTURB_SHIFT: u32 = 5;

#[derive(Clone, Debug)]
enum Slot {
    Empty,
    Dummy,
    Active {
        hash: i64,
        key: String,
        value: HwValue,
    },
}

#[derive(Clone, Debug)]
pub struct PyDict {
    table: Vec<Slot>,
    used: usize,
    fill: usize,
}

/// Python 2.7's `hash()` of a byte string (64-bit build).
pub fn str_hash(s: &[u8]) -> i64 {
    seq_hash(s.iter().map(|&b| i64::from(b)), s.len())
}

/// Python 2.7's `hash()` of a `unicode` string (UCS-4 build, as the
/// reference): the same algorithm on code points.
pub fn unicode_hash(s: &str) -> i64 {
    seq_hash(
        s.chars().map(|c| i64::from(u32::from(c))),
        s.chars().count(),
    )
}

fn seq_hash(mut units: impl Iterator<Item = i64>, len: usize) -> i64 {
    let Some(first) = units.next() else {
        return 0;
    };
    let mut x = first << 7;
    x = x.wrapping_mul(1_000_003) ^ first;
    for c in units {
        x = x.wrapping_mul(1_000_003) ^ c;
    }
    x ^= len as i64;
    if x == -1 {
        -2
    } else {
        x
    }
}

/// The dict a display `{k0: v0, k1: v1, ...}` evaluates to, for
/// distinct keys with the given hashes; its keys are the indices
/// (`"0"`, `"1"`...). The table is presized for more than 5 keys, then
/// filled in order.
pub fn display(hashes: &[i64]) -> PyDict {
    let mut d = PyDict::new();
    if hashes.len() > 5 {
        d.resize(hashes.len().min(0xffff));
    }
    for (i, &h) in hashes.iter().enumerate() {
        d.insert_hashed(&i.to_string(), h, &HwValue::None);
    }
    d
}

/// The order in which Python 2.7 goes through the dict display of
/// `keys` (in the display's order), or through a copy of it (`copy`, the
/// legacy `dict.copy()`). `None` when a key's hash is not reproduced here
/// (keys other than strings and numbers).
pub fn display_order(keys: &[&Value], copy: bool) -> Option<Vec<usize>> {
    let hashes: Vec<i64> = keys.iter().map(|k| value_hash(k)).collect::<Option<_>>()?;
    let d = display(&hashes);
    let d = if copy { d.copy() } else { d };
    Some(d.iter().filter_map(|(k, _)| k.parse().ok()).collect())
}

/// Python 2.7's `hash()` of a dict key, for strings and numbers.
fn value_hash(key: &Value) -> Option<i64> {
    let int = |i: i64| if i == -1 { -2 } else { i };
    match key {
        Value::Str(b) => Some(str_hash(b)),
        Value::Unicode(s) => Some(unicode_hash(s)),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Int(i) => Some(int(*i)),
        Value::Long(l) => i64::try_from(*l).ok().map(int),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(int(*f as i64)),
        _ => None,
    }
}

impl PartialEq for PyDict {
    fn eq(&self, other: &PyDict) -> bool {
        self.used == other.used && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl PyDict {
    pub fn new() -> PyDict {
        PyDict {
            table: vec![Slot::Empty; MINSIZE],
            used: 0,
            fill: 0,
        }
    }

    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    /// `lookdict_string`: the slot holding `key`, else the slot where
    /// it would go (the first dummy on its probe path, or the empty
    /// slot ending it).
    fn lookup(&self, key: &str, hash: i64) -> usize {
        let mask = self.mask();
        let mut i = (hash as u64 as usize) & mask;
        let mut freeslot = None;
        match &self.table[i] {
            Slot::Empty => return i,
            Slot::Active { key: k, .. } if k == key => return i,
            Slot::Dummy => freeslot = Some(i),
            Slot::Active { .. } => {}
        }
        let mut perturb = hash as u64 as usize;
        loop {
            i = (i << 2)
                .wrapping_add(i)
                .wrapping_add(perturb)
                .wrapping_add(1);
            let j = i & mask;
            match &self.table[j] {
                Slot::Empty => return freeslot.unwrap_or(j),
                Slot::Active { key: k, .. } if k == key => return j,
                Slot::Dummy if freeslot.is_none() => freeslot = Some(j),
                _ => {}
            }
            perturb >>= PERTURB_SHIFT;
        }
    }

    pub fn get(&self, key: &str) -> Option<&HwValue> {
        match &self.table[self.lookup(key, str_hash(key.as_bytes()))] {
            Slot::Active { value, .. } => Some(value),
            _ => None,
        }
    }

    /// `insertdict`, without the resize check.
    fn insert_no_resize(&mut self, key: &str, hash: i64, value: &HwValue) {
        let j = self.lookup(key, hash);
        match &mut self.table[j] {
            Slot::Active { value: v, .. } => *v = value.clone(),
            slot => {
                if matches!(slot, Slot::Empty) {
                    self.fill += 1;
                }
                *slot = Slot::Active {
                    hash,
                    key: key.to_string(),
                    value: value.clone(),
                };
                self.used += 1;
            }
        }
    }

    /// `d[key] = value` (`PyDict_SetItem`).
    pub fn insert(&mut self, key: &str, value: &HwValue) {
        self.insert_hashed(key, str_hash(key.as_bytes()), value);
    }

    fn insert_hashed(&mut self, key: &str, hash: i64, value: &HwValue) {
        let n_used = self.used;
        self.insert_no_resize(key, hash, value);
        if self.used > n_used && self.fill * 3 >= self.table.len() * 2 {
            let factor = if self.used > 50_000 { 2 } else { 4 };
            self.resize(factor * self.used);
        }
    }

    /// `del d[key]`.
    fn remove(&mut self, key: &str) {
        let j = self.lookup(key, str_hash(key.as_bytes()));
        if matches!(self.table[j], Slot::Active { .. }) {
            self.table[j] = Slot::Dummy;
            self.used -= 1;
        }
    }

    /// `dictresize`: a table of the smallest power of two above
    /// `minused`, active entries re-inserted in old table order.
    fn resize(&mut self, minused: usize) {
        let mut size = MINSIZE;
        while size <= minused {
            size <<= 1;
        }
        let old = std::mem::replace(&mut self.table, vec![Slot::Empty; size]);
        self.used = 0;
        self.fill = 0;
        let mask = size - 1;
        for slot in old {
            if let Slot::Active { hash, key, value } = slot {
                let mut i = (hash as u64 as usize) & mask;
                let mut perturb = hash as u64 as usize;
                while !matches!(self.table[i & mask], Slot::Empty) {
                    i = (i << 2)
                        .wrapping_add(i)
                        .wrapping_add(perturb)
                        .wrapping_add(1);
                    perturb >>= PERTURB_SHIFT;
                }
                self.table[i & mask] = Slot::Active { hash, key, value };
                self.used += 1;
                self.fill += 1;
            }
        }
    }

    /// `self.update(other)` (`PyDict_Merge`): one resize up front if
    /// needed, then the entries in `other`'s table order.
    pub fn update(&mut self, other: &PyDict) {
        if other.used == 0 {
            return;
        }
        if (self.fill + other.used) * 3 >= self.table.len() * 2 {
            self.resize((self.used + other.used) * 2);
        }
        for slot in &other.table {
            if let Slot::Active { hash, key, value } = slot {
                self.insert_no_resize(key, *hash, value);
            }
        }
    }

    /// `d.copy()`.
    pub fn copy(&self) -> PyDict {
        let mut d = PyDict::new();
        d.update(self);
        d
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &HwValue)> {
        self.table.iter().filter_map(|s| match s {
            Slot::Active { key, value, .. } => Some((key.as_str(), value)),
            _ => None,
        })
    }

    pub fn to_map(&self) -> BTreeMap<String, HwValue> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// The legacy rename loop, run on the live table:
    /// `for k in d: if k[0] == '$': d[k[1:]] = d[k]; forced[k[1:]] =
    /// d[k]; del d[k]`. Errors are the exceptions Python raises: a key
    /// `''` (`IndexError`), or a rename onto an existing key, which
    /// shrinks the dict under the iterator (`RuntimeError`).
    pub fn move_forced(&mut self, forced: &mut PyDict) -> Result<(), &'static str> {
        let size_at_start = self.used;
        let mut pos = 0;
        loop {
            if self.used != size_at_start {
                return Err("RuntimeError: dictionary changed size during iteration");
            }
            let Some(i) =
                (pos..self.table.len()).find(|&i| matches!(self.table[i], Slot::Active { .. }))
            else {
                return Ok(());
            };
            pos = i + 1;
            let Slot::Active { key, value, .. } = &self.table[i] else {
                continue;
            };
            let Some(name) = key.strip_prefix('$') else {
                if key.is_empty() {
                    return Err("IndexError: string index out of range");
                }
                continue;
            };
            let (key, name, value) = (key.clone(), name.to_string(), value.clone());
            self.insert(&name, &value);
            forced.insert(&name, &value);
            self.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_hashes_and_dict_order() {
        assert_eq!(str_hash(b""), 0);
        assert_eq!(str_hash(b"a"), 12416037344);
        assert_eq!(str_hash(b"eth"), -3051142320817332998);
        assert_eq!(str_hash(b"\xff\x00"), 32640195839293759);
        assert_eq!(unicode_hash("eth"), str_hash(b"eth"));
        assert_eq!(unicode_hash("\u{e9}t\u{20ac}"), -4116773383342150334);
        let keys = ["eth", "ip", "netmask", "x", "mac", "a"];
        let hashes: Vec<i64> = keys.iter().map(|k| str_hash(k.as_bytes())).collect();
        let order = |d: &PyDict| -> Vec<&str> {
            d.iter()
                .map(|(k, _)| keys[k.parse::<usize>().unwrap()])
                .collect()
        };
        let d = display(&hashes);
        assert_eq!(order(&d), ["a", "ip", "netmask", "mac", "x", "eth"]);
        assert_eq!(order(&d.copy()), ["a", "netmask", "x", "ip", "eth", "mac"]);
    }
}
