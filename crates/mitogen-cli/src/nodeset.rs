//! Host ranges as pdsh and clush write them: `web[01-20,25]` expands to
//! `web01` … `web20`, `web25`, and a set of names folds back into the
//! shortest such form for display (`web[01-19]`).
//!
//! Operators already know this notation from pdsh/clush, so the command
//! speaks it both ways: on the way in (targets) and on the way out (the
//! folded host list above gathered output). Padding follows the first
//! bound: `[01-20]` gives two digits, `[1-20]` none.

use std::collections::BTreeMap;
use std::fmt;

/// Most names one pattern may expand to: a typo like `[1-1000000]` fails
/// instead of eating memory.
pub const MAX_EXPANSION: usize = 100_000;

/// A pattern that does not expand, with the byte span of the bad part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError {
    /// Byte offset of the bad part in the pattern.
    pub at: usize,
    /// Length of the bad part in bytes (at least 1).
    pub len: usize,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

/// One bracket's items: numbers with their zero-padding width.
fn bracket_items(body: &str, base: usize) -> Result<Vec<String>, RangeError> {
    let mut out = Vec::new();
    let mut off = 0;
    for item in body.split(',') {
        let at = base + off;
        off += item.len() + 1;
        let err = |why: String| RangeError {
            at,
            len: item.len().max(1),
            why,
        };
        if item.is_empty() {
            return Err(err("empty item in a range".into()));
        }
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (a, b),
            None => (item, item),
        };
        let num = |s: &str| -> Result<u64, RangeError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 18 {
                return Err(err(format!("{s:?} is not a number (in {item:?})")));
            }
            s.parse::<u64>()
                .map_err(|e| err(format!("{s:?} is not a number: {e}")))
        };
        let (a, b) = (num(lo)?, num(hi)?);
        if a > b {
            return Err(err(format!("range {item:?} goes backwards")));
        }
        if b - a >= MAX_EXPANSION as u64 {
            return Err(err(format!(
                "range {item:?} has more than {MAX_EXPANSION} names"
            )));
        }
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        out.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

/// Expands every `[..]` of `pattern` (several brackets multiply).
pub fn expand(pattern: &str) -> Result<Vec<String>, RangeError> {
    let mut names = vec![String::new()];
    let mut rest = pattern;
    let mut base = 0;
    while let Some(open) = rest.find(['[', ']']) {
        if rest.as_bytes()[open] == b']' {
            return Err(RangeError {
                at: base + open,
                len: 1,
                why: "']' without '['".into(),
            });
        }
        let text = &rest[..open];
        let after = &rest[open + 1..];
        let close = after.find(']').ok_or(RangeError {
            at: base + open,
            len: 1,
            why: "'[' is not closed".into(),
        })?;
        let body = &after[..close];
        if let Some(nested) = body.find('[') {
            return Err(RangeError {
                at: base + open + 1 + nested,
                len: 1,
                why: "ranges do not nest".into(),
            });
        }
        let items = bracket_items(body, base + open + 1)?;
        if names.len().saturating_mul(items.len()) > MAX_EXPANSION {
            return Err(RangeError {
                at: base + open,
                len: close + 2,
                why: format!("the pattern expands to more than {MAX_EXPANSION} names"),
            });
        }
        names = names
            .iter()
            .flat_map(|n| items.iter().map(move |i| format!("{n}{text}{i}")))
            .collect();
        base += open + close + 2;
        rest = &after[close + 1..];
    }
    for n in &mut names {
        n.push_str(rest);
    }
    Ok(names)
}

/// Splits `s` at top-level commas (commas inside `[..]` belong to ranges).
/// Returns each part with its byte offset.
pub fn split_top_level(s: &str, sep: char) -> Vec<(usize, &str)> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            c if c == sep && depth <= 0 => {
                parts.push((start, &s[start..i]));
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push((start, &s[start..]));
    parts
}

/// A name cut into text and digit runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Tok {
    Text(String),
    Num(String),
}

fn tokens(name: &str) -> Vec<Tok> {
    let mut out: Vec<Tok> = Vec::new();
    for c in name.chars() {
        let digit = c.is_ascii_digit();
        match out.last_mut() {
            Some(Tok::Num(s)) if digit => s.push(c),
            Some(Tok::Text(s)) if !digit => s.push(c),
            _ if digit => out.push(Tok::Num(c.to_string())),
            _ => out.push(Tok::Text(c.to_string())),
        }
    }
    out
}

/// Runs of consecutive numbers as `a-b` items, printed with `width`.
fn ranges(mut nums: Vec<u64>, width: usize) -> Vec<String> {
    nums.sort_unstable();
    nums.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < nums.len() {
        let mut j = i;
        while j + 1 < nums.len() && nums[j + 1] == nums[j] + 1 {
            j += 1;
        }
        if i == j {
            out.push(format!("{:0width$}", nums[i]));
        } else {
            out.push(format!("{:0width$}-{:0width$}", nums[i], nums[j]));
        }
        i = j + 1;
    }
    out
}

/// Folds the numbers found at one position into bracket forms.
fn fold_numbers(nums: &[&str]) -> Vec<(usize, String)> {
    // A padded number ("07") fixes a width; an unpadded one of the same
    // length ("10") can be printed in it too.
    let mut padded: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    let mut natural = Vec::new();
    for n in nums {
        let v = n.parse::<u64>().unwrap_or(u64::MAX);
        if n.len() > 1 && n.starts_with('0') {
            padded.entry(n.len()).or_default().push(v);
        } else {
            natural.push((n.len(), v));
        }
    }
    let mut plain = Vec::new();
    for (len, v) in natural {
        match padded.get_mut(&len) {
            Some(list) => list.push(v),
            None => plain.push(v),
        }
    }
    let mut out: Vec<(usize, Vec<u64>)> = padded.into_iter().collect();
    if !plain.is_empty() {
        out.push((0, plain));
    }
    out.into_iter()
        .map(|(w, v)| {
            let items = ranges(v.clone(), w);
            let single = items.len() == 1 && !items[0].contains('-');
            let body = if single {
                items[0].clone()
            } else {
                format!("[{}]", items.join(","))
            };
            (v.len(), body)
        })
        .collect()
}

/// Folds names into the shortest bracket forms, one string per form, in
/// a stable order (sorted by the text around the numbers).
pub fn fold(names: &[String]) -> Vec<String> {
    let mut uniq: Vec<&String> = names.iter().collect();
    uniq.sort();
    uniq.dedup();
    // Names of the same shape (same text between the digit runs) may fold.
    let mut shapes: BTreeMap<Vec<Option<String>>, Vec<Vec<Tok>>> = BTreeMap::new();
    for n in uniq {
        let t = tokens(n);
        let shape = t
            .iter()
            .map(|t| match t {
                Tok::Text(s) => Some(s.clone()),
                Tok::Num(_) => None,
            })
            .collect();
        shapes.entry(shape).or_default().push(t);
    }
    let mut out = Vec::new();
    for group in shapes.values() {
        let axes: Vec<usize> = (0..group[0].len())
            .filter(|&i| matches!(group[0][i], Tok::Num(_)))
            .collect();
        if axes.is_empty() || group.len() == 1 {
            out.extend(group.iter().map(|t| render(t, None, "")));
            continue;
        }
        // The axis along which the fewest groups remain (the rightmost
        // on a tie: `rack1-node[1-9]` rather than `rack[1]-node1`).
        let by_axis = |k: usize| {
            let mut m: BTreeMap<Vec<Tok>, Vec<&str>> = BTreeMap::new();
            for t in group {
                let mut key = t.clone();
                key[k] = Tok::Num(String::new());
                if let Tok::Num(n) = &t[k] {
                    m.entry(key).or_default().push(n);
                }
            }
            m
        };
        let best = axes
            .iter()
            .rev()
            .map(|&k| (k, by_axis(k)))
            .min_by_key(|(_, m)| m.len());
        let Some((k, m)) = best else { continue };
        for (key, nums) in m {
            for (_, body) in fold_numbers(&nums) {
                out.push(render(&key, Some(k), &body));
            }
        }
    }
    out
}

fn render(toks: &[Tok], axis: Option<usize>, body: &str) -> String {
    let mut s = String::new();
    for (i, t) in toks.iter().enumerate() {
        match t {
            _ if Some(i) == axis => s.push_str(body),
            Tok::Text(x) | Tok::Num(x) => s.push_str(x),
        }
    }
    s
}

/// `fold` joined with commas: `web[01-19],db1`.
pub fn fold_str(names: &[String]) -> String {
    fold(names).join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &str) -> Vec<String> {
        expand(p).unwrap_or_else(|e| panic!("{p}: {e:?}"))
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn expands_ranges_lists_and_padding() {
        assert_eq!(ex("web1"), s(&["web1"]));
        assert_eq!(ex("web[1-3]"), s(&["web1", "web2", "web3"]));
        assert_eq!(
            ex("web[01-03,25]"),
            s(&["web01", "web02", "web03", "web25"])
        );
        assert_eq!(ex("web[8-10]"), s(&["web8", "web9", "web10"]));
        assert_eq!(
            ex("web[08-10].lan"),
            s(&["web08.lan", "web09.lan", "web10.lan"])
        );
        assert_eq!(ex("r[1-2]n[1-2]"), s(&["r1n1", "r1n2", "r2n1", "r2n2"]));
        assert_eq!(ex("[3]"), s(&["3"]));
    }

    #[test]
    fn expansion_errors_point_at_the_bad_part() {
        let e = expand("web[01-x]").unwrap_err();
        assert_eq!((e.at, e.len), (4, 4));
        assert!(e.why.contains("not a number"), "{e:?}");
        let e = expand("web[5-1]").unwrap_err();
        assert!(e.why.contains("backwards"));
        assert_eq!(e.at, 4);
        let e = expand("web[1-3").unwrap_err();
        assert_eq!((e.at, e.why.as_str()), (3, "'[' is not closed"));
        let e = expand("web]").unwrap_err();
        assert_eq!(e.at, 3);
        let e = expand("a[1,,2]").unwrap_err();
        assert!(e.why.contains("empty"));
        assert_eq!(e.at, 4);
        let e = expand("a[1-3][1-2,]").unwrap_err();
        assert_eq!(e.at, 11);
        assert!(expand("a[0-99999999]")
            .unwrap_err()
            .why
            .contains("more than"));
        assert!(expand("a[0-999]b[0-999]")
            .unwrap_err()
            .why
            .contains("more than"));
        assert!(expand("a[[1]]").is_err());
    }

    #[test]
    fn splits_at_top_level_commas_only() {
        let parts: Vec<_> = split_top_level("a[1,2],b,c[3-4]", ',');
        assert_eq!(parts, vec![(0, "a[1,2]"), (7, "b"), (9, "c[3-4]")]);
    }

    #[test]
    fn folds_like_clush() {
        let names: Vec<String> = (1..=19).map(|i| format!("web{i:02}")).collect();
        assert_eq!(fold_str(&names), "web[01-19]");
        assert_eq!(
            fold_str(&s(&["web1", "web3", "web2", "web7"])),
            "web[1-3,7]"
        );
        assert_eq!(fold_str(&s(&["web09", "web10", "web11"])), "web[09-11]");
        assert_eq!(fold_str(&s(&["web9", "web10"])), "web[9-10]");
        assert_eq!(fold_str(&s(&["db", "web1", "web1"])), "db,web1");
        assert_eq!(
            fold_str(&s(&["ssh:b/ssh:web01:2222", "ssh:b/ssh:web02:2222"])),
            "ssh:b/ssh:web[01-02]:2222"
        );
        assert_eq!(fold_str(&s(&["r1n1", "r1n2", "r1n3"])), "r1n[1-3]");
        assert_eq!(fold_str(&s(&["r1n1", "r2n1", "r3n1"])), "r[1-3]n1");
        assert_eq!(
            fold_str(&s(&["local1", "local2", "local4"])),
            "local[1-2,4]"
        );
    }

    #[test]
    fn fold_then_expand_gives_the_names_back() {
        let names = s(&["n01", "n02", "n03", "n10", "n9", "x", "r7b", "r8b"]);
        let mut back: Vec<String> = fold(&names)
            .iter()
            .flat_map(|f| expand(f).unwrap())
            .collect();
        back.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(back, want);
    }
}
