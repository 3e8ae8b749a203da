//! `deploy/targets.example.yaml` stays a valid targets file with one target per provider kind.

use scimrelay_core::config::{ProviderKind, TargetsFile};

#[test]
fn the_example_targets_file_parses_and_covers_every_provider() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/targets.example.yaml"
    );
    let text = std::fs::read_to_string(path).expect("deploy/targets.example.yaml");
    let file = TargetsFile::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    for kind in ProviderKind::SHIPPED {
        assert!(
            file.targets_of(&kind).next().is_some(),
            "no {kind:?} target in the example"
        );
    }
}
