//! The main job, `folio demo`, run in-process against the repository's fixtures.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_settles_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("demo");
    let fixtures = folio_e2e::harness::fixture("aba");
    let report = api::cli::demo::run_demo(&data_dir, &fixtures, Duration::from_secs(60))
        .await
        .unwrap();
    let rendered = report.render();
    assert!(report.ok(), "{rendered}");
    assert!(report.verified, "{rendered}");
    assert_eq!(report.dead_lettered, 2, "{rendered}");
    assert_eq!(
        report.bank_distinct_payments, report.receipted,
        "{rendered}"
    );
    assert!(!report.files_rejected.is_empty(), "{rendered}");
    assert!(
        report.files_accepted.iter().all(|(_, count)| *count > 0),
        "{rendered}"
    );
}
