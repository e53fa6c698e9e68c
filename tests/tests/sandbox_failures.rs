//! Each way a plugin can misbehave yields its typed error within its limit,
//! and the host keeps serving other items and other plugins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use techne::backends::ModelSet;
use techne::backends::scripted::ScriptedBackend;
use techne::sandbox::{CallError, LoadError, Plugin, PluginSpec, SandboxEngine, SandboxLimits, WorkItem};
use techne_integration_tests::{artifacts, test_engine};

fn engine() -> SandboxEngine {
    test_engine(env!("CARGO_TARGET_TMPDIR"))
}

fn item(id: &str) -> WorkItem {
    WorkItem { id: id.to_string(), seed: techne::sandbox::item_seed(42, id) }
}

async fn chaos(engine: &SandboxEngine, limits: SandboxLimits, models: ModelSet, allowed: &[&str]) -> Plugin {
    let mut spec = PluginSpec::new("chaos", artifacts::CHAOS);
    spec.limits = limits;
    spec.allowed_models = allowed.iter().map(|m| m.to_string()).collect();
    spec.default_model = allowed.first().map(|m| m.to_string());
    engine.load(&spec, &models).await.expect("the chaos plugin loads")
}

/// After a failure the same plugin still serves the next item.
async fn still_serves(plugin: &Plugin) {
    let solution = plugin.solve(&item("after"), "echo:still here").await.expect("a clean call after a failure");
    assert_eq!(solution.answer, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_times_out_within_its_deadline() {
    let engine = engine();
    let limits = SandboxLimits { timeout: Duration::from_millis(300), ..SandboxLimits::default() };
    let plugin = chaos(&engine, limits, ModelSet::new(), &[]).await;
    let start = Instant::now();
    let err = plugin.solve(&item("loop"), "loop").await.unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err, CallError::Timeout { limit: Duration::from_millis(300) });
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?} to enforce a 300 ms deadline");
    still_serves(&plugin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_past_the_cap_is_a_memory_limit_error() {
    let engine = engine();
    let limits = SandboxLimits { memory_bytes: 32 << 20, ..SandboxLimits::default() };
    let plugin = chaos(&engine, limits, ModelSet::new(), &[]).await;
    let small = plugin.solve(&item("small"), "alloc:8").await.expect("8 MiB fits in 32 MiB");
    assert_eq!(small.answer, "allocated 8");
    let err = plugin.solve(&item("big"), "alloc:64").await.unwrap_err();
    assert_eq!(err, CallError::MemoryLimit { limit_bytes: 32 << 20 });
    still_serves(&plugin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_is_a_stack_overflow() {
    let engine = engine();
    let plugin = chaos(&engine, SandboxLimits::default(), ModelSet::new(), &[]).await;
    assert_eq!(plugin.solve(&item("r"), "recurse").await.unwrap_err(), CallError::StackOverflow);
    still_serves(&plugin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_reported_with_its_message() {
    let engine = engine();
    let plugin = chaos(&engine, SandboxLimits::default(), ModelSet::new(), &[]).await;
    match plugin.solve(&item("p"), "panic").await.unwrap_err() {
        CallError::Panic { message } => assert!(message.contains("chaos plugin panicked on purpose"), "{message}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    still_serves(&plugin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_output_breaks_the_boundary_limit() {
    let engine = engine();
    let limits = SandboxLimits { max_output_bytes: 1 << 20, ..SandboxLimits::default() };
    let plugin = chaos(&engine, limits, ModelSet::new(), &[]).await;
    let fits = plugin.solve(&item("fits"), "oversize:1000").await.expect("1000 bytes fit");
    assert_eq!(fits.answer.len(), 1000);
    match plugin.solve(&item("o"), "oversize:2000000").await.unwrap_err() {
        CallError::BoundaryLimit { direction, bytes, limit, setting } => {
            assert_eq!((direction, limit, setting), ("out of the plugin", 1 << 20, "max-output-bytes"));
            assert!(bytes >= 2_000_000);
        }
        other => panic!("expected a boundary limit, got {other:?}"),
    }
    still_serves(&plugin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_input_is_refused_before_the_call() {
    let engine = engine();
    let limits = SandboxLimits { max_input_bytes: 64, ..SandboxLimits::default() };
    let plugin = chaos(&engine, limits, ModelSet::new(), &[]).await;
    let err = plugin.solve(&item("i"), &format!("echo:{}", "x".repeat(100))).await.unwrap_err();
    assert!(matches!(err, CallError::BoundaryLimit { direction: "into the plugin", .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_blocked_inside_a_host_call_is_cancelled() {
    let engine = engine();
    let mut models = ModelSet::new();
    models.insert("stuck", Arc::new(ScriptedBackend::hanging()));
    let limits = SandboxLimits { timeout: Duration::from_millis(300), ..SandboxLimits::default() };
    let plugin = chaos(&engine, limits, models, &["stuck"]).await;
    let start = Instant::now();
    let err = plugin.solve(&item("h"), "hang-in-host").await.unwrap_err();
    assert_eq!(err, CallError::Timeout { limit: Duration::from_millis(300) });
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    still_serves(&plugin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_the_host_does_not_provide_is_named() {
    let engine = engine();
    let err = engine.load(&PluginSpec::new("m", artifacts::MISSING_IMPORT), &ModelSet::new()).await.unwrap_err();
    match &err {
        LoadError::ImportNotProvided { import, .. } => {
            assert!(import.starts_with("techne:unprovided/network"), "{import}")
        }
        other => panic!("expected a missing import, got {other:?}"),
    }
    assert!(err.to_string().contains("techne does not provide"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_refuses_calls_after_a_trap() {
    let engine = engine();
    let plugin = chaos(&engine, SandboxLimits::default(), ModelSet::new(), &[]).await;
    let mut instance = plugin.instantiate(&item("reuse")).await.unwrap();
    assert_eq!(instance.solve("echo:1").await.unwrap().answer, "1");
    assert_eq!(instance.solve("echo:2").await.unwrap().answer, "2");
    assert!(matches!(instance.solve("panic").await, Err(CallError::Panic { .. })));
    assert_eq!(instance.solve("echo:3").await.unwrap_err(), CallError::Poisoned);
}

/// Seven well-behaved plugins and one that traps on every call, all at once:
/// the seven produce exactly what they produce without the eighth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_plugins_with_one_trapping_match_a_clean_run() {
    let engine = engine();
    let mut models = ModelSet::new();
    models.insert("echo", Arc::new(ScriptedBackend::echo()));
    let mut healthy = Vec::new();
    for i in 0..7 {
        let mut spec = PluginSpec::new(format!("healthy-{i}"), artifacts::CHAOS);
        spec.allowed_models = vec!["echo".into()];
        spec.default_model = Some("echo".into());
        healthy.push(Arc::new(engine.load(&spec, &models).await.unwrap()));
    }
    let trapper = Arc::new(engine.load(&PluginSpec::new("trapper", artifacts::CHAOS), &models).await.unwrap());
    let problems = |p: usize, i: usize| match i % 4 {
        0 => format!("echo:plugin {p} item {i}"),
        1 => "seed".to_string(),
        2 => format!("chat:hello from {p}/{i}"),
        _ => format!("state:k{i}=v{p}"),
    };

    async fn run_all(
        plugins: &[Arc<Plugin>],
        problems: &(dyn Fn(usize, usize) -> String + Sync),
        trapper: Option<Arc<Plugin>>,
    ) -> Vec<String> {
        let mut tasks = tokio::task::JoinSet::new();
        for (p, plugin) in plugins.iter().enumerate() {
            for i in 0..12 {
                let plugin = plugin.clone();
                let problem = problems(p, i);
                tasks.spawn(async move {
                    let id = format!("{p}-{i}");
                    let out = plugin
                        .solve(&WorkItem { id: id.clone(), seed: techne::sandbox::item_seed(7, &id) }, &problem)
                        .await;
                    (p * 100 + i, format!("{out:?}"))
                });
            }
        }
        if let Some(trapper) = trapper {
            for i in 0..24 {
                let trapper = trapper.clone();
                tasks.spawn(async move {
                    let problem = if i % 2 == 0 { "panic" } else { "recurse" };
                    let out = trapper.solve(&WorkItem { id: format!("t{i}"), seed: 0 }, problem).await;
                    assert!(out.is_err(), "the trapping plugin must fail");
                    (usize::MAX - i, String::new())
                });
            }
        }
        let mut results = Vec::new();
        while let Some(r) = tasks.join_next().await {
            results.push(r.unwrap());
        }
        results.retain(|(k, _)| *k < usize::MAX - 1000);
        results.sort();
        results.into_iter().map(|(_, s)| s).collect()
    }

    let clean = run_all(&healthy, &problems, None).await;
    let with_trapper = run_all(&healthy, &problems, Some(trapper)).await;
    assert_eq!(clean.len(), 84);
    assert!(clean.iter().all(|r| r.starts_with("Ok(")), "{clean:?}");
    assert_eq!(clean, with_trapper);
}
