//! The start-up build (two threads: one reads and interns, one grows the graphs) makes the
//! same graph as applying the stored records one by one in key order: same rows, node ids,
//! edge ids, symbols, typed lists, sessions and counters, for several orgs, with links,
//! lineage, sessions and erasures; and only the orgs a placement serves.

mod common;

use common::graphs::{fingerprints, populated};
use feedgraph::graph::GraphIndex;
use feedgraph::service::Service;
use feedgraph::store::ChangeSet;

/// The reference: every served org's adapters, then its records one at a time in key
/// order, applied to an empty index as a write applies its changes.
fn applied_one_by_one(s: &Service, serves: &dyn Fn(&str) -> bool) -> GraphIndex {
    let index = GraphIndex::new();
    s.store()
        .for_each_adapter(&mut |a| {
            if serves(&a.org_id) {
                let org = a.org_id.clone();
                index
                    .apply(
                        &org,
                        &ChangeSet {
                            adapters: vec![a],
                            ..ChangeSet::default()
                        },
                    )
                    .wait();
            }
            Ok(())
        })
        .unwrap();
    s.store()
        .for_each_record(&mut |org, r| {
            if serves(org) {
                index
                    .apply_records(
                        org,
                        &ChangeSet {
                            feedback: vec![r],
                            ..ChangeSet::default()
                        },
                    )
                    .wait();
            }
            Ok(())
        })
        .unwrap();
    index
}

#[test]
fn the_start_up_build_equals_the_records_applied_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = populated(dir.path());
    let built = GraphIndex::build(s.store()).unwrap();
    let reference = applied_one_by_one(&s, &|_| true);
    let (built, reference) = (fingerprints(&built), fingerprints(&reference));
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        ["acme", "globex", "initech", "zeta-new"]
    );
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (org, fp) in &built {
        assert!(fp.contains("edges="), "{org}");
        assert_eq!(fp, &reference[org], "the graph of {org}");
    }
    // And, canonically, the live graph the writes made.
    assert_eq!(
        GraphIndex::build(s.store()).unwrap().canonical(),
        s.graph().canonical()
    );
    assert_eq!(s.verify().unwrap(), None);
}

#[test]
fn the_start_up_build_indexes_only_the_orgs_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = populated(dir.path());
    let serves = |org: &str| org != "globex" && org != "initech";
    let built = fingerprints(&GraphIndex::build_for(s.store(), &serves).unwrap());
    let reference = fingerprints(&applied_one_by_one(&s, &serves));
    assert_eq!(built.keys().collect::<Vec<_>>(), ["acme", "zeta-new"]);
    assert_eq!(built, reference);
}
