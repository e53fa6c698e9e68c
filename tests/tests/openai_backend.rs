//! The OpenAI-compatible backend against a fault-injecting local server
//! (retries, `Retry-After`, timeouts, truncated bodies, cooldown, fallbacks,
//! redirects, rate limits, the JSON it sends) and against a real
//! `llama-server` (llama.cpp) serving SmolLM2-135M-Instruct.
//!
//! The real-server test needs `target/llama.cpp/build/bin/llama-server`
//! (`scripts/build-llama-cpp.sh`) and the model package (`scripts/setup.sh`);
//! without them it says it is skipped and passes, unless
//! `TECHNE_REQUIRE_LLAMA_SERVER=1`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use techne::backends::openai::{OpenAiBackend, OpenAiModelConfig};
use techne::backends::{
    BackendError, ChatMessage, GenerationRequest, ModelBackend, Prompt, Role, Sampling, ScoringRequest,
};
use techne::runs::build_models;
use techne_integration_tests::fault_server::{self, FaultServer, RecordedRequest, Reply};
use techne_integration_tests::llama_server::{self, LlamaServer};

/// Fast retries, short timeouts, no cooldown unless a test asks.
fn config(base_url: &str) -> OpenAiModelConfig {
    let mut c = OpenAiModelConfig::new(base_url, "test-model");
    c.connect_timeout_ms = 2_000;
    c.request_timeout_ms = 5_000;
    c.idle_timeout_ms = 5_000;
    c.max_retries = 3;
    c.retry_base_ms = 10;
    c.retry_max_ms = 50;
    c.retry_after_cap_ms = 5_000;
    c.cooldown_after_failures = 0;
    c
}

fn backend(config: &OpenAiModelConfig) -> OpenAiBackend {
    OpenAiBackend::with_api_key(config, None).unwrap()
}

fn chat(question: &str) -> GenerationRequest {
    GenerationRequest {
        prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, question)]),
        sampling: Sampling { max_tokens: 16, ..Sampling::default() },
    }
}

fn ok_chat(_: &RecordedRequest) -> Reply {
    Reply::ok(fault_server::chat_completion(&["fine"]))
}

fn body(request: &RecordedRequest) -> serde_json::Value {
    serde_json::from_str(&request.body).unwrap()
}

#[tokio::test]
async fn retry_after_is_honoured_then_the_request_succeeds() {
    let server = FaultServer::scripted(vec![Reply::error(429, "slow down").with_header("Retry-After", "1")], ok_chat);
    let started = Instant::now();
    let generation = backend(&config(&server.base_url())).generate(chat("hi")).await.unwrap();
    assert_eq!(generation.choices[0].text, "fine");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_millis(950), "Retry-After: 1 not honoured: {gap:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].method, "POST");
}

#[tokio::test]
async fn retry_after_is_capped() {
    let server =
        FaultServer::scripted(vec![Reply::error(503, "maintenance").with_header("Retry-After", "3600")], ok_chat);
    let mut c = config(&server.base_url());
    c.retry_after_cap_ms = 200;
    let started = Instant::now();
    backend(&c).generate(chat("hi")).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn server_error_is_retried() {
    let server = FaultServer::scripted(vec![Reply::error(500, "boom")], ok_chat);
    backend(&config(&server.base_url())).generate(chat("hi")).await.unwrap();
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn transient_failures_give_up_after_max_retries() {
    let server = FaultServer::start(|_| Reply::error(502, "bad gateway"));
    let mut c = config(&server.base_url());
    c.max_retries = 2;
    let err = backend(&c).generate(chat("hi")).await.unwrap_err();
    assert_eq!(server.request_count(), 3);
    let BackendError::Failed(message) = err else { panic!("{err:?}") };
    assert!(message.contains("failed 3 time(s)") && message.contains("bad gateway"), "{message}");
    assert!(message.contains("max-retries"), "{message}");
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    for (status, invalid) in [(400, true), (422, true), (404, false), (403, false)] {
        let server = FaultServer::start(move |_| Reply::error(status, "no such thing"));
        let err = backend(&config(&server.base_url())).generate(chat("hi")).await.unwrap_err();
        assert_eq!(server.request_count(), 1, "HTTP {status} was retried");
        match (&err, invalid) {
            (BackendError::InvalidRequest(m), true) => assert!(m.contains("no such thing"), "{m}"),
            (BackendError::Failed(m), false) => assert!(m.contains(&status.to_string()), "{m}"),
            _ => panic!("HTTP {status}: {err:?}"),
        }
        if status == 404 {
            assert!(err.to_string().contains("check `base-url`"), "{err}");
        }
    }
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_the_key_stays_secret() {
    const KEY: &str = "sk-test-0123456789abcdef";
    let server = FaultServer::start(|_| Reply::error(401, &format!("Incorrect API key provided: {KEY}")));
    let mut c = config(&server.base_url());
    c.api_key_env = Some("TECHNE_TEST_OPENAI_KEY".into());
    let backend = OpenAiBackend::with_api_key(&c, Some(KEY.into())).unwrap();
    let err = backend.generate(chat("hi")).await.unwrap_err();
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    let BackendError::Failed(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("TECHNE_TEST_OPENAI_KEY"), "{message}");
    assert!(!message.contains(KEY), "the key leaked into the error: {message}");
    assert!(!format!("{backend:?} {err:?}").contains(KEY));
    assert!(!backend.describe().contains(KEY));
}

#[tokio::test]
async fn a_stall_past_the_request_timeout_is_retried() {
    let server = FaultServer::scripted(vec![Reply::stall(Duration::from_secs(3), Reply::ok("{}"))], ok_chat);
    let mut c = config(&server.base_url());
    c.request_timeout_ms = 300;
    let started = Instant::now();
    let generation = backend(&c).generate(chat("hi")).await.unwrap();
    assert_eq!(generation.choices[0].text, "fine");
    assert_eq!(server.request_count(), 2);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_truncated_body_is_retried() {
    let full = fault_server::chat_completion(&["this answer is cut"]);
    let server = FaultServer::scripted(vec![Reply::Truncated { sent: full.len() / 2, body: full }], ok_chat);
    let generation = backend(&config(&server.base_url())).generate(chat("hi")).await.unwrap();
    assert_eq!(generation.choices[0].text, "fine");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let server = FaultServer::scripted(vec![Reply::Drop], ok_chat);
    backend(&config(&server.base_url())).generate(chat("hi")).await.unwrap();
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = config(&format!("http://127.0.0.1:{port}/v1"));
    c.max_retries = 2;
    let err = backend(&c).generate(chat("hi")).await.unwrap_err();
    assert!(err.to_string().contains("failed 3 time(s)"), "{err}");
    assert!(err.to_string().contains("could not connect"), "{err}");
}

#[tokio::test]
async fn the_endpoint_cools_down_after_repeated_failures() {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let server = FaultServer::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            Reply::ok(fault_server::chat_completion(&["back"]))
        } else {
            Reply::error(503, "overloaded")
        }
    });
    let mut c = config(&server.base_url());
    c.max_retries = 10;
    c.cooldown_after_failures = 3;
    c.cooldown_ms = 1_500;
    let backend = backend(&c);
    let err = backend.generate(chat("hi")).await.unwrap_err();
    assert_eq!(server.request_count(), 3, "the cooldown should stop the retries at the threshold");
    assert!(err.to_string().contains("cooling down"), "{err}");
    // While cooling down: fails fast, the server sees nothing.
    let started = Instant::now();
    let err = backend.generate(chat("hi")).await.unwrap_err();
    assert!(err.to_string().contains("cooling down") && err.to_string().contains("fallbacks"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(1_000), "{:?}", started.elapsed());
    assert_eq!(server.request_count(), 3);
    // After the cooldown, requests go through again.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(backend.generate(chat("hi")).await.unwrap().choices[0].text, "back");
    assert_eq!(server.request_count(), 4);
}

fn run_config(text: &str) -> Result<techne::config::RunConfig, techne::config::ConfigError> {
    techne::config::parse_run_config(Path::new("run.toml"), text)
}

#[tokio::test]
async fn a_failing_model_falls_back_to_the_next() {
    let primary = FaultServer::start(|_| Reply::error(503, "down"));
    let secondary = FaultServer::start(|_| Reply::ok(fault_server::chat_completion(&["from b"])));
    let text = format!(
        r#"
inputs = ["q"]
[network]
allow-hosts = ["127.0.0.1"]
[models.a]
backend = "openai"
base-url = "{}"
model = "a-model"
max-retries = 1
retry-base-ms = 1
retry-max-ms = 5
cooldown-after-failures = 2
cooldown-ms = 60000
fallbacks = ["b"]
[models.b]
backend = "openai"
base-url = "{}"
model = "b-model"
[pipeline]
answer-model = "a"
"#,
        primary.base_url(),
        secondary.base_url()
    );
    let models = build_models(&run_config(&text).unwrap()).unwrap();
    let a = models.get("a").unwrap();
    assert!(a.describe().contains("fallbacks: b"), "{}", a.describe());
    let generation = a.generate(chat("hi")).await.unwrap();
    assert_eq!(generation.choices[0].text, "from b");
    assert_eq!(primary.request_count(), 2, "one attempt and one retry on the primary");
    assert_eq!(body(&secondary.requests()[0])["model"], "b-model");
    // The primary now cools down: the next request goes straight to b.
    a.generate(chat("again")).await.unwrap();
    assert_eq!(primary.request_count(), 2);
    assert_eq!(secondary.request_count(), 2);
    // b itself is not wrapped.
    assert!(!models.get("b").unwrap().describe().contains("fallbacks"));
}

#[tokio::test]
async fn an_invalid_request_does_not_fall_back() {
    let primary = FaultServer::start(|_| Reply::error(400, "max_tokens is too large"));
    let secondary = FaultServer::start(ok_chat);
    let text = format!(
        "inputs = [\"q\"]\n[network]\nallow-hosts = [\"127.0.0.1\"]\n[models.a]\nbackend = \"openai\"\nbase-url = \"{}\"\n\
         model = \"m\"\nfallbacks = [\"b\"]\n[models.b]\nbackend = \"openai\"\nbase-url = \"{}\"\nmodel = \"m\"\n\
         [pipeline]\nanswer-model = \"a\"\n",
        primary.base_url(),
        secondary.base_url()
    );
    let models = build_models(&run_config(&text).unwrap()).unwrap();
    let err = models.get("a").unwrap().generate(chat("hi")).await.unwrap_err();
    assert!(matches!(err, BackendError::InvalidRequest(_)), "{err:?}");
    assert_eq!(secondary.request_count(), 0);
}

#[test]
fn configuration_errors_name_the_key_and_the_fix() {
    let base = "inputs = [\"q\"]\n[pipeline]\nanswer-model = \"a\"\n";
    let model = "[models.a]\nbackend = \"openai\"\nbase-url = \"http://127.0.0.1:8080/v1\"\nmodel = \"m\"\n";
    let cases = [
        (String::new(), "models.a.base-url", "add \"127.0.0.1\" to [network] allow-hosts"),
        ("[network]\nallow-hosts = [\"api.openai.com\"]\n".into(), "models.a.base-url", "add \"127.0.0.1\""),
        (
            "[network]\nallow-hosts = [\"https://api.openai.com/v1\"]\n".into(),
            "network.allow-hosts[0]",
            "host name only",
        ),
        ("[network]\nallow-hosts = [\"127.0.0.1\"]\n[models.a.x]\n".into(), "models.a", "unknown field"),
    ];
    for (extra, key, fix) in cases {
        let text = format!("{base}{model}{extra}");
        let err = run_config(&text).unwrap_err();
        let techne::config::ConfigError::Invalid { key: got, message, .. } = &err else { panic!("{err}") };
        assert!(got.starts_with(key), "{err}");
        assert!(message.contains(fix), "{err}");
    }
    let text = format!("{base}[network]\nallow-hosts = [\"127.0.0.1\"]\n{model}fallbacks = [\"nope\"]\n");
    let err = run_config(&text).unwrap_err().to_string();
    assert!(err.contains("models.a.fallbacks[0]") && err.contains("add a [models.nope] table"), "{err}");
    let text = format!("{base}[network]\nallow-hosts = [\"127.0.0.1\"]\n{model}max-concurrency = 0\n");
    let err = run_config(&text).unwrap_err().to_string();
    assert!(err.contains("models.a.max-concurrency"), "{err}");
    let text = format!("{base}[network]\nallow-hosts = [\"*.openai.com\", \"127.0.0.1\"]\n{model}");
    let config = run_config(&text).unwrap();
    assert_eq!(config.models["a"].backend_name(), "openai");
}

#[tokio::test]
async fn a_redirect_to_another_host_is_refused() {
    let elsewhere = FaultServer::start(ok_chat);
    let location = format!("http://localhost:{}/v1/chat/completions", elsewhere.addr().port());
    let server = FaultServer::start(move |_| Reply::redirect(307, &location));
    let err = backend(&config(&server.base_url())).generate(chat("hi")).await.unwrap_err();
    let BackendError::Failed(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("refused a redirect") && message.contains("localhost"), "{message}");
    assert_eq!(server.request_count(), 1, "a refused redirect is not retried");
    assert_eq!(elsewhere.request_count(), 0, "the other host was contacted");
}

#[tokio::test]
async fn a_redirect_within_the_host_is_followed() {
    let server = FaultServer::start(|request| {
        if request.path == "/v1/chat/completions" {
            Reply::redirect(307, "/v2/chat/completions")
        } else {
            ok_chat(request)
        }
    });
    backend(&config(&server.base_url())).generate(chat("hi")).await.unwrap();
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v2/chat/completions"]);
}

#[tokio::test]
async fn requests_per_minute_spreads_requests() {
    let server = FaultServer::start(ok_chat);
    let mut c = config(&server.base_url());
    c.requests_per_minute = Some(600); // 10 a second, a burst of 10
    let backend = backend(&c);
    let started = Instant::now();
    for _ in 0..20 {
        backend.generate(chat("hi")).await.unwrap();
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "20 requests at 10/s after a burst of 10 took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(server.request_count(), 20);
}

#[tokio::test]
async fn tokens_per_minute_follows_the_reported_usage() {
    // Every answer says it used the whole minute's budget.
    let server = FaultServer::start(|_| {
        Reply::ok(
            r#"{"choices":[{"index":0,"message":{"content":"x"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":600,"completion_tokens":600,"total_tokens":1200}}"#,
        )
    });
    let mut c = config(&server.base_url());
    c.tokens_per_minute = Some(1200); // 20 a second
    let backend = backend(&c);
    backend.generate(chat("hi")).await.unwrap();
    backend.generate(chat("hi")).await.unwrap();
    let requests = server.requests();
    let gap = requests[1].at - requests[0].at;
    // The second request's estimate (~19 tokens) had to refill at 20/s.
    assert!(gap >= Duration::from_millis(700), "{gap:?}");
    assert!(gap < Duration::from_secs(3), "{gap:?}");
}

#[tokio::test]
async fn max_concurrency_caps_requests_in_flight() {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (a, p) = (active.clone(), peak.clone());
    let server = FaultServer::start(move |_| {
        let now = a.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(150));
        a.fetch_sub(1, Ordering::SeqCst);
        Reply::ok(fault_server::chat_completion(&["ok"]))
    });
    let mut c = config(&server.base_url());
    c.max_concurrency = 2;
    let backend = Arc::new(backend(&c));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move { backend.generate(chat("hi")).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(server.request_count(), 6);
    assert!(peak.load(Ordering::SeqCst) <= 2, "peak in flight: {}", peak.load(Ordering::SeqCst));
}

#[tokio::test]
async fn sampling_maps_to_the_json_sent() {
    let server = FaultServer::start(|_| {
        Reply::ok(
            r#"{"choices":[
                {"index":1,"message":{"content":"second"},"finish_reason":"length",
                 "logprobs":{"content":[{"token":"sec","logprob":-0.5},{"token":"ond","logprob":-1.5}]}},
                {"index":0,"message":{"content":"first"},"finish_reason":"stop",
                 "logprobs":{"content":[{"token":"first","logprob":-0.25}]}}],
              "usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#,
        )
    });
    let request = GenerationRequest {
        prompt: Prompt::Chat(vec![ChatMessage::new(Role::System, "be brief"), ChatMessage::new(Role::User, "count")]),
        sampling: Sampling {
            max_tokens: 20,
            temperature: 0.7,
            top_p: 0.9,
            stop: vec!["END".into(), "\n\n".into()],
            seed: 12345,
            n: 2,
            logprobs: true,
        },
    };
    let generation = backend(&config(&server.base_url())).generate(request).await.unwrap();
    let sent = body(&server.requests()[0]);
    assert_eq!(sent["model"], "test-model");
    assert_eq!(
        sent["messages"],
        serde_json::json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "count"}])
    );
    assert_eq!(sent["max_tokens"], 20);
    assert_eq!(sent["n"], 2);
    assert_eq!(sent["stop"], serde_json::json!(["END", "\n\n"]));
    assert_eq!(sent["seed"], 12345);
    assert_eq!(sent["logprobs"], true);
    assert_eq!(sent["top_logprobs"], 1);
    assert!((sent["temperature"].as_f64().unwrap() - 0.7).abs() < 1e-6);
    assert!((sent["top_p"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    // Choices come back in index order, with their log-probabilities.
    let texts: Vec<&str> = generation.choices.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["first", "second"]);
    assert_eq!(generation.choices[1].finish_reason, techne::backends::FinishReason::Length);
    assert_eq!(generation.choices[1].logprobs.len(), 2);
    assert_eq!(generation.choices[1].logprobs[1].logprob, -1.5);
    assert_eq!((generation.prompt_tokens, generation.completion_tokens), (9, 3));
}

#[tokio::test]
async fn text_prompts_use_completions_and_missing_choices_are_requested_one_by_one() {
    let server = FaultServer::start(|_| Reply::ok(fault_server::text_completion(" more")));
    let request = GenerationRequest {
        prompt: Prompt::Text("Once upon".into()),
        sampling: Sampling { max_tokens: 4, n: 3, seed: 7, logprobs: true, ..Sampling::default() },
    };
    let generation = backend(&config(&server.base_url())).generate(request).await.unwrap();
    assert_eq!(generation.choices.len(), 3);
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "the server ignores n: two more single requests");
    let sent: Vec<serde_json::Value> = requests.iter().map(body).collect();
    assert_eq!(requests[0].path, "/v1/completions");
    assert_eq!(sent[0]["prompt"], "Once upon");
    assert_eq!(sent[0]["logprobs"], 1);
    assert_eq!(sent[0]["n"], 3);
    assert!(sent[0].get("stop").is_none());
    let seeds: Vec<u64> = sent.iter().map(|b| b["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, [7, 8, 9]);
    assert_eq!(sent[1]["n"], 1);
}

#[tokio::test]
async fn scoring_reads_echoed_prompt_logprobs() {
    let server = FaultServer::start(|request| {
        let sent: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(sent["echo"], true);
        assert_eq!(sent["logprobs"], 1);
        let prompt = sent["prompt"].as_str().unwrap().to_string();
        // "The capital is" + continuation, token by token, plus one generated token.
        let (tokens, logprobs): (Vec<&str>, Vec<&str>) = if prompt.ends_with(" Paris") {
            (vec!["The", " capital", " is", " Par", "is", "."], vec!["null", "-3.0", "-1.0", "-0.5", "-0.25", "-2.0"])
        } else {
            (vec!["The", " capital", " is", " Berlin", "."], vec!["null", "-3.0", "-1.0", "-4.0", "-2.0"])
        };
        let text: String = tokens.concat();
        let offsets: Vec<String> = tokens
            .iter()
            .scan(0, |at, t| {
                let start = *at;
                *at += t.len();
                Some(start.to_string())
            })
            .collect();
        let tokens: Vec<String> = tokens.iter().map(|t| fault_server::json_string(t)).collect();
        Reply::ok(format!(
            r#"{{"choices":[{{"index":0,"text":{},"finish_reason":"length","logprobs":{{"tokens":[{}],"token_logprobs":[{}],"text_offset":[{}]}}}}]}}"#,
            fault_server::json_string(&text),
            tokens.join(","),
            logprobs.join(","),
            offsets.join(",")
        ))
    });
    let scores = backend(&config(&server.base_url()))
        .score(ScoringRequest {
            prompt: Prompt::Text("The capital is".into()),
            continuations: vec![" Paris".into(), " Berlin".into()],
        })
        .await
        .unwrap();
    assert_eq!(scores[0].token_logprobs, vec![-0.5, -0.25]);
    assert!((scores[0].logprob_sum + 0.75).abs() < 1e-9);
    assert_eq!(scores[1].token_logprobs, vec![-4.0]);
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn scoring_without_echo_support_is_unsupported_at_once() {
    // What llama-server answers to `echo: true`.
    let server = FaultServer::start(|_| Reply::error(500, "Only no echo is supported"));
    let backend = backend(&config(&server.base_url()));
    let request =
        ScoringRequest { prompt: Prompt::Text("The capital is".into()), continuations: vec![" Paris".into()] };
    let err = backend.score(request.clone()).await.unwrap_err();
    let BackendError::Unsupported(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("does not return prompt log-probabilities") && message.contains("local"), "{message}");
    assert_eq!(server.request_count(), 1, "an unsupported feature is not retried");
    assert!(matches!(backend.score(request).await, Err(BackendError::Unsupported(_))));
    assert_eq!(server.request_count(), 1, "known to be unsupported: no second request");

    // A server that ignores `echo` (answers only the generated token).
    let ignoring = FaultServer::start(|_| Reply::ok(fault_server::text_completion(".")));
    let err = backend_for(&ignoring)
        .score(ScoringRequest { prompt: Prompt::Text("Hi".into()), continuations: vec![" there".into()] })
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unsupported(_)), "{err:?}");
    // Chat prompts cannot be scored remotely.
    let err = backend_for(&ignoring)
        .score(ScoringRequest {
            prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, "hi")]),
            continuations: vec!["x".into()],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unsupported(_)), "{err:?}");
}

fn backend_for(server: &FaultServer) -> OpenAiBackend {
    backend(&config(&server.base_url()))
}

#[tokio::test]
async fn embeddings_come_back_in_order_and_normalised() {
    let server = FaultServer::start(|_| Reply::ok(fault_server::embeddings(&[vec![3.0, 4.0], vec![0.0, 2.0]])));
    let vectors = backend_for(&server).embed(vec!["a".into(), "b".into()]).await.unwrap();
    assert_eq!(vectors, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
    let sent = body(&server.requests()[0]);
    assert_eq!(server.requests()[0].path, "/v1/embeddings");
    assert_eq!(sent["input"], serde_json::json!(["a", "b"]));
    assert_eq!(sent["model"], "test-model");
    // A server without embeddings (llama-server without --embeddings answers 501).
    let plain = FaultServer::start(|_| {
        Reply::error(501, "This server does not support embeddings. Start it with `--embeddings`")
    });
    let err = backend_for(&plain).embed(vec!["a".into()]).await.unwrap_err();
    assert!(matches!(err, BackendError::Unsupported(_)), "{err:?}");
    assert_eq!(plain.request_count(), 1);
}

// ---------------------------------------------------------------------------
// Against a real OpenAI-compatible server.

/// The llama-server binary and the model, or `None` (skipped) when either is
/// missing and `TECHNE_REQUIRE_LLAMA_SERVER` is not `1`.
fn llama_server_inputs() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let required = std::env::var("TECHNE_REQUIRE_LLAMA_SERVER").as_deref() == Ok("1");
    let binary = llama_server::binary_path();
    let model = techne_inference::locate::smollm2_gguf();
    let missing = match (&model, binary.is_file()) {
        (_, false) => format!("{} is missing: run scripts/build-llama-cpp.sh", binary.display()),
        (None, true) => "the SmolLM2 model package is missing: run scripts/setup.sh".to_string(),
        (Some(_), true) => return model.map(|m| (binary, m)),
    };
    assert!(!required, "TECHNE_REQUIRE_LLAMA_SERVER=1 but {missing}");
    eprintln!("skipped: {missing}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_llama_server_serves_chat_logprobs_and_embeddings() {
    let Some((binary, model)) = llama_server_inputs() else { return };
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let server = LlamaServer::start(
        &binary,
        &model,
        &["--parallel", "2"],
        &dir.path().join("chat.log"),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("llama-server ready in {:?}", started.elapsed());
    let mut c = OpenAiModelConfig::new(server.base_url(), "smollm2");
    c.request_timeout_ms = 120_000;
    c.max_retries = 1;
    let backend = OpenAiBackend::with_api_key(&c, None).unwrap();

    // Greedy chat (with the system prompt the inference tests use: SmolLM2's
    // built-in default one leads the 135M model astray).
    let mut request = GenerationRequest {
        prompt: Prompt::Chat(vec![
            ChatMessage::new(Role::System, "You are a helpful assistant."),
            ChatMessage::new(Role::User, "What is the capital of France?"),
        ]),
        sampling: Sampling::default(),
    };
    request.sampling.max_tokens = 32;
    let generation = backend.generate(request.clone()).await.unwrap();
    assert!(generation.choices[0].text.contains("Paris"), "{:?}", generation.choices[0].text);
    assert!(generation.prompt_tokens > 0 && generation.completion_tokens > 0, "{generation:?}");

    // Sampling with a seed: n choices, reproducible.
    let mut sampled = chat("Name a colour.");
    sampled.sampling = Sampling { max_tokens: 12, temperature: 0.9, seed: 4242, n: 2, ..Sampling::default() };
    let first = backend.generate(sampled.clone()).await.unwrap();
    assert_eq!(first.choices.len(), 2);
    let again = backend.generate(sampled).await.unwrap();
    let texts = |g: &techne::backends::Generation| g.choices.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&first), texts(&again), "same seed, same choices");

    // Log-probabilities of the generated tokens.
    request.sampling.logprobs = true;
    request.sampling.max_tokens = 8;
    let generation = backend.generate(request).await.unwrap();
    let logprobs = &generation.choices[0].logprobs;
    assert!(!logprobs.is_empty(), "{generation:?}");
    // (The end-of-turn token comes back with empty text.)
    assert!(logprobs.iter().all(|t| t.logprob <= 0.0), "{logprobs:?}");
    assert!(logprobs.iter().any(|t| t.token.contains("Paris")), "{logprobs:?}");

    // Raw text completion.
    let text = backend
        .generate(GenerationRequest {
            prompt: Prompt::Text("The capital of France is".into()),
            sampling: Sampling { max_tokens: 6, logprobs: true, ..Sampling::default() },
        })
        .await
        .unwrap();
    assert!(!text.choices[0].text.is_empty() && !text.choices[0].logprobs.is_empty(), "{text:?}");

    // Scoring: llama-server does not echo prompt log-probabilities.
    let scored = backend
        .score(ScoringRequest {
            prompt: Prompt::Text("The capital of France is".into()),
            continuations: vec![" Paris".into(), " a banana".into()],
        })
        .await;
    match scored {
        Err(BackendError::Unsupported(message)) => {
            eprintln!("scoring is unsupported, as expected of llama-server: {message}");
            assert!(message.contains("echo"), "{message}");
        }
        Ok(scores) => {
            eprintln!("this llama-server echoes prompt log-probabilities: {scores:?}");
            assert!(scores[0].logprob_sum > scores[1].logprob_sum, "{scores:?}");
        }
        Err(other) => panic!("scoring: {other:?}"),
    }

    // Without --embeddings the server has no embeddings.
    let err = backend.embed(vec!["hello".into()]).await.unwrap_err();
    assert!(matches!(err, BackendError::Unsupported(_)), "{err:?}");
    drop(server);

    let server = LlamaServer::start(
        &binary,
        &model,
        // One slot: this llama.cpp build pools inconsistently when it embeds
        // several sequences in parallel slots (identical texts differ).
        &["--embeddings", "--pooling", "mean", "--parallel", "1"],
        &dir.path().join("embeddings.log"),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let backend = OpenAiBackend::with_api_key(&OpenAiModelConfig::new(server.base_url(), "smollm2"), None).unwrap();
    let texts = vec![
        "The cat sat on the mat.".to_string(),
        "Stocks fell sharply today.".into(),
        "The cat sat on the mat.".into(),
    ];
    let vectors = backend.embed(texts).await.unwrap();
    assert_eq!(vectors.len(), 3);
    let dims = vectors[0].len();
    assert!(dims > 0 && vectors.iter().all(|v| v.len() == dims));
    for v in &vectors {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    }
    let cosine = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(cosine(&vectors[0], &vectors[2]) > 0.999);
    assert!(cosine(&vectors[0], &vectors[1]) < cosine(&vectors[0], &vectors[2]));
    eprintln!("real-server test done in {:?}", started.elapsed());
}
