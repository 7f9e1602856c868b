//! Org placement: which orgs this replica serves (`[placement]`), so that several
//! replicas over one database each hold the graphs of only some orgs and total memory
//! grows with the number of replicas, not with each one.
//!
//! A replica serves every org (the default), a list (`placement.orgs`), or a hash shard
//! (`placement.shard = "i/n"`: the orgs whose stable hash modulo `n` is `i`, counting from
//! 0). The hash is FNV-1a 64 of the org id's bytes ([`crate::store::stable_hash`]), the
//! same on every build and machine, so `n` replicas with shards `0/n` .. `n-1/n` split
//! the orgs between them without overlap. A replica builds and follows only its orgs'
//! graphs and answers any other org's request with 421 Misdirected Request naming its
//! placement.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::ServiceError;

/// The `[placement]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementConfig {
    /// Serve only these orgs (empty: no list).
    pub orgs: Vec<String>,
    /// Serve only the orgs of this hash shard, `"i/n"` with `0 <= i < n` (unset: no shard).
    pub shard: Option<String>,
}

/// Which orgs a replica serves, parsed from [`PlacementConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Placement {
    /// Every org (the default).
    #[default]
    All,
    /// The orgs listed.
    Orgs(BTreeSet<String>),
    /// The orgs whose hash modulo `of` is `index`.
    Shard {
        /// This replica's shard, from 0.
        index: u64,
        /// How many shards there are.
        of: u64,
    },
}

impl Placement {
    /// Parses the settings; both a list and a shard, or a malformed shard, is an error.
    pub fn from_config(c: &PlacementConfig) -> Result<Placement, ServiceError> {
        match (&c.shard, c.orgs.is_empty()) {
            (None, true) => Ok(Placement::All),
            (None, false) => Ok(Placement::Orgs(c.orgs.iter().cloned().collect())),
            (Some(_), false) => Err(ServiceError::Config(
                "placement: set either orgs or shard, not both".into(),
            )),
            (Some(s), true) => {
                let bad = || {
                    ServiceError::Config(format!(
                        "placement.shard must be \"i/n\" with 0 <= i < n (e.g. \"0/2\"), got '{s}'"
                    ))
                };
                let (i, n) = s.split_once('/').ok_or_else(bad)?;
                let index: u64 = i.trim().parse().map_err(|_| bad())?;
                let of: u64 = n.trim().parse().map_err(|_| bad())?;
                if of == 0 || index >= of {
                    return Err(bad());
                }
                Ok(Placement::Shard { index, of })
            }
        }
    }

    /// The shard (0-based) an org falls into when orgs are split `of` ways.
    pub fn shard_of(org: &str, of: u64) -> u64 {
        crate::store::stable_hash(org.as_bytes()) % of.max(1)
    }

    /// Whether this replica serves `org`.
    pub fn serves(&self, org: &str) -> bool {
        match self {
            Placement::All => true,
            Placement::Orgs(list) => list.contains(org),
            Placement::Shard { index, of } => Self::shard_of(org, *of) == *index,
        }
    }

    /// `Ok` for an org this replica serves, else [`ServiceError::Misplaced`].
    pub fn check(&self, org: &str) -> Result<(), ServiceError> {
        if self.serves(org) {
            return Ok(());
        }
        let hint = match self {
            Placement::Shard { of, .. } => {
                format!(
                    "; org '{org}' is in shard {}/{of}",
                    Self::shard_of(org, *of)
                )
            }
            _ => String::new(),
        };
        Err(ServiceError::Misplaced(format!(
            "this replica does not serve org '{org}' (placement: {self}){hint}; send the \
             request to the replica that serves it"
        )))
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::All => write!(f, "every org"),
            Placement::Orgs(list) => {
                let names: Vec<&str> = list.iter().map(String::as_str).collect();
                write!(f, "orgs [{}]", names.join(", "))
            }
            Placement::Shard { index, of } => write!(f, "shard {index}/{of}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_orgs_without_overlap_and_parse_strictly() {
        let a = Placement::from_config(&PlacementConfig {
            shard: Some("0/2".into()),
            ..Default::default()
        })
        .unwrap();
        let b = Placement::Shard { index: 1, of: 2 };
        for i in 0..200 {
            let org = format!("org-{i}");
            assert!(a.serves(&org) != b.serves(&org), "{org}");
        }
        for bad in ["2/2", "x/2", "1", "0/0"] {
            let c = PlacementConfig {
                shard: Some(bad.into()),
                ..Default::default()
            };
            assert!(Placement::from_config(&c).is_err(), "{bad}");
        }
        assert_eq!(
            Placement::from_config(&PlacementConfig::default()).unwrap(),
            Placement::All
        );
        let e = Placement::Orgs(["a".to_owned()].into())
            .check("b")
            .unwrap_err();
        assert!(e.to_string().contains("orgs [a]"), "{e}");
    }
}
