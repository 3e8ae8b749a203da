//! `make bench-quick` as a test: runs `scimrelay-bench --quick` (every benchmark section at a
//! tiny size against the real stack) so the benchmark harness cannot rot between `make bench`
//! runs. It checks the harness works — every section ran and reported figures, charts were
//! drawn — not the figures themselves, which depend on the machine and its load.

use std::process::Command;

use scimrelay_tests::bin_path;

#[test]
fn bench_quick_writes_every_section_and_the_charts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("BENCHMARKS.md");
    let out = Command::new(bin_path("scimrelay-bench"))
        .arg("--quick")
        .arg("--out")
        .arg(&report)
        .arg("--dir")
        .arg(dir.path().join("run"))
        .output()
        .expect("running scimrelay-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scimrelay-bench --quick failed:\n{stderr}"
    );
    let text = std::fs::read_to_string(&report).expect("the report");
    for section in [
        "## 1. Throughput",
        "## 2. Latency",
        "## 3. Quota use",
        "## 4. Scale",
        "## 5. Baseline",
        "## 6. Status service",
        "## 7. Login during a bulk load",
        "| cores (nproc) | ",
        "| RabbitMQ | ",
    ] {
        assert!(
            text.contains(section),
            "no {section:?} in the report:\n{text}"
        );
    }
    // Every run got all its outcomes: no "–" (missing) figure in the tables of figures.
    assert!(
        !text.contains("| – |"),
        "a figure is missing (a run did not finish):\n{text}\n{stderr}"
    );
    for chart in ["throughput", "latency", "rss", "backlog"] {
        let png = dir.path().join(format!("docs/bench/{chart}.png"));
        let bytes = std::fs::read(&png).unwrap_or_default();
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            png.display()
        );
    }
}
