//! Groups of targets from an inventory file, and turning what the user
//! typed (`web[01-03],@db`, `-w`, `-x`) into the list of targets.
//!
//! The format is one group per line, as clush's `groups.conf` has it,
//! because a flat file that `grep` and `sed` can edit is what operators
//! keep next to their pdsh scripts:
//!
//! ```text
//! # comment
//! web: ssh:deploy@bastion/web[01-20]:2222
//! db:  db[1-2], db-backup/sudo
//! all: @web @db
//! ```
//!
//! Members are targets in the chain syntax or `@other` groups, separated
//! by commas or spaces. The file is `--inventory FILE`, else
//! `$MITOGEN_INVENTORY`, else `~/.config/mitogen/inventory` when present.

use crate::nodeset::split_top_level;
use crate::target::{parse_chain, ParseError, Target};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Groups read from an inventory file.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Where the groups came from (for errors).
    path: Option<PathBuf>,
    /// Group name → (line number, members text).
    groups: BTreeMap<String, (usize, String)>,
}

impl Inventory {
    /// Reads `path`, or the default file when `None` (missing default: no
    /// groups).
    pub fn load(path: Option<&Path>) -> Result<Inventory, String> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match std::env::var_os("MITOGEN_INVENTORY") {
                Some(p) => (PathBuf::from(p), true),
                None => match std::env::var_os("HOME") {
                    Some(h) => (Path::new(&h).join(".config/mitogen/inventory"), false),
                    None => return Ok(Inventory::default()),
                },
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Inventory::parse(&text, Some(path)),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Inventory::default())
            }
            Err(e) => Err(format!("cannot read inventory {}: {e}", path.display())),
        }
    }

    /// Parses an inventory's text.
    pub fn parse(text: &str, path: Option<PathBuf>) -> Result<Inventory, String> {
        let mut inv = Inventory {
            path,
            groups: BTreeMap::new(),
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((name, members)) = line.split_once(':') else {
                return Err(format!("{}: expected `group: members`", inv.origin(i + 1)));
            };
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!("{}: bad group name {name:?}", inv.origin(i + 1)));
            }
            if inv.groups.contains_key(name) {
                return Err(format!(
                    "{}: group {name:?} defined twice",
                    inv.origin(i + 1)
                ));
            }
            inv.groups
                .insert(name.to_string(), (i + 1, members.trim().to_string()));
        }
        Ok(inv)
    }

    fn origin(&self, line: usize) -> String {
        match &self.path {
            Some(p) => format!("inventory {} line {line}", p.display()),
            None => format!("inventory line {line}"),
        }
    }

    /// The targets of group `name` (nested groups expanded).
    fn group(&self, name: &str, seen: &mut Vec<String>) -> Result<Vec<Target>, String> {
        if seen.iter().any(|s| s == name) {
            return Err(format!(
                "group @{name} includes itself ({})",
                seen.join(" → ")
            ));
        }
        let Some((line, members)) = self.groups.get(name) else {
            let known = self.groups.keys().cloned().collect::<Vec<_>>().join(", @");
            return Err(match (&self.path, known.is_empty()) {
                (None, _) => format!("unknown group @{name}: no inventory file"),
                (Some(p), true) => format!("unknown group @{name}: {} has none", p.display()),
                (Some(_), false) => format!("unknown group @{name} (known: @{known})"),
            });
        };
        seen.push(name.to_string());
        let r = self.resolve_in(&self.origin(*line), members, seen, true);
        seen.pop();
        r
    }

    /// Targets of a comma list (spaces separate too when `spaces`).
    fn resolve_in(
        &self,
        origin: &str,
        text: &str,
        seen: &mut Vec<String>,
        spaces: bool,
    ) -> Result<Vec<Target>, String> {
        let mut out = Vec::new();
        for (at, part) in split_top_level(text, ',') {
            let mut items = vec![(at, part)];
            if spaces {
                items = split_top_level(part, ' ')
                    .into_iter()
                    .map(|(a, p)| (at + a, p))
                    .collect();
            }
            for (at, item) in items {
                let lead = item.len() - item.trim_start().len();
                let (at, item) = (at + lead, item.trim());
                if item.is_empty() && spaces {
                    continue;
                }
                if let Some(g) = item.strip_prefix('@') {
                    if !g.is_empty() {
                        out.extend(self.group(g, seen)?);
                        continue;
                    }
                }
                let targets =
                    parse_chain(origin, text, at, item).map_err(|e: ParseError| e.to_string())?;
                out.extend(targets);
            }
        }
        Ok(out)
    }

    /// The targets of one argument (`web[1-3],@db,local`).
    pub fn resolve(&self, text: &str) -> Result<Vec<Target>, String> {
        self.resolve_in("target", text, &mut Vec::new(), false)
    }

    /// The targets of every `-w`/positional argument, less those any `-x`
    /// argument names (see [`Target::matches`]), each once, in order.
    pub fn select(&self, include: &[String], exclude: &[String]) -> Result<Vec<Target>, String> {
        let mut names_out: Vec<String> = Vec::new();
        let mut targets_out: Vec<Target> = Vec::new();
        for x in exclude {
            for (_, part) in split_top_level(x, ',') {
                if let Some(g) = part.trim().strip_prefix('@') {
                    targets_out.extend(self.group(g, &mut Vec::new())?);
                } else {
                    let e = crate::nodeset::expand(part.trim()).map_err(|e| {
                        ParseError {
                            origin: "exclusion".into(),
                            input: part.to_string(),
                            at: e.at,
                            len: e.len,
                            why: e.why,
                        }
                        .to_string()
                    })?;
                    names_out.extend(e);
                }
            }
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for arg in include {
            for t in self.resolve(arg)? {
                let gone = targets_out.contains(&t) || names_out.iter().any(|n| t.matches(n));
                if !gone && seen.insert(t.clone()) {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "\
# the fleet
web: ssh:deploy@bastion/web[01-03]:2222
db:  db[1-2], db-backup/sudo   # trailing comment
all: @web @db local
loop: @loop2
loop2: @loop
";

    fn inv() -> Inventory {
        Inventory::parse(INV, Some("inv".into())).unwrap()
    }

    fn names(v: &[Target]) -> Vec<String> {
        v.iter().map(Target::name).collect()
    }

    #[test]
    fn groups_expand_and_nest() {
        let i = inv();
        assert_eq!(
            names(&i.resolve("@db").unwrap()),
            ["db1", "db2", "db-backup/sudo:root"]
        );
        let all = i.resolve("@all").unwrap();
        assert_eq!(all.len(), 7);
        assert_eq!(all[0].name(), "deploy@bastion/web01:2222");
        assert_eq!(all[6].name(), "local");
    }

    #[test]
    fn bad_groups_are_clear_errors() {
        let i = inv();
        assert!(i
            .resolve("@nope")
            .unwrap_err()
            .contains("unknown group @nope"));
        assert!(i.resolve("@loop").unwrap_err().contains("includes itself"));
        let e = Inventory::parse("web ssh:x\n", None).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = Inventory::parse("a: x\na: y\n", None).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = Inventory::parse("a: web[1-x]\n", Some("f".into()))
            .unwrap()
            .resolve("@a")
            .unwrap_err();
        assert!(e.contains("inventory f line 1"), "{e}");
        assert!(e.contains("\n  web[1-x]\n      ^"), "{e}");
        assert!(Inventory::default()
            .resolve("@x")
            .unwrap_err()
            .contains("no inventory"));
    }

    #[test]
    fn commas_separate_targets_and_errors_point_into_the_whole_argument() {
        let i = Inventory::default();
        assert_eq!(
            names(&i.resolve("web[1-2],local,db1/sudo").unwrap()),
            ["web1", "web2", "local", "db1/sudo:root"]
        );
        let e = i.resolve("web1,web2:9x").unwrap_err();
        assert!(e.ends_with("  web1,web2:9x\n            ^^"), "{e}");
    }

    #[test]
    fn exclusions_and_duplicates() {
        let i = inv();
        let inc = vec!["@all".to_string(), "db1".to_string()];
        let got = i.select(&inc, &["web[02-03],@db".into()]).unwrap();
        assert_eq!(names(&got), ["deploy@bastion/web01:2222", "local"]);
        let got = i
            .select(&["local[1-5]".into()], &["local[2-4]".into()])
            .unwrap();
        assert_eq!(names(&got), ["local1", "local5"]);
        let got = i.select(&["@web".into()], &["bastion".into()]).unwrap();
        assert!(got.is_empty());
        assert!(i.select(&["a".into()], &["x[".into()]).is_err());
    }
}
