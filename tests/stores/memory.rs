use singleton_process::conformance::Suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    let store = singleton_process::connect("memory:")
        .await
        .expect("connect");
    Suite::new(store).run_all().await;
}

#[tokio::test]
async fn memory_store_tells_waiters() {
    let store = singleton_process::connect("memory:")
        .await
        .expect("connect");
    let suite = Suite::new(store);
    suite.watchers_hear_releases().await;
    suite.watchers_hear_acquires().await;
}
