//! `techne-test-chaos`: a solver plugin (world `solver-plugin`) that
//! misbehaves on request, for the host's integration tests. It is not a
//! technique.
//!
//! `solve(problem, params)` dispatches on the problem text:
//!
//! | problem | behaviour |
//! | --- | --- |
//! | `echo:TEXT` | answers `TEXT`, with an empty trace |
//! | `loop` | spins forever without calling the host (tests the timeout / epoch interruption) |
//! | `alloc:N` | allocates N MiB, writes to every page, keeps it alive, answers `allocated N` (tests the memory limit) |
//! | `recurse` | unbounded, non-tail recursion that really overflows the wasm call stack (tests stack-overflow reporting) |
//! | `panic` | `panic!("chaos plugin panicked on purpose")` (a trap: on wasm32 a panic aborts) |
//! | `oversize:N` | answers a string of exactly N bytes (`x` repeated; tests the output size limit) |
//! | `hang-in-host` | chats with `llm::default_model()` (the host test makes that backend never return) and answers the reply's text |
//! | `chat:PROMPT` | chats `PROMPT` as a user message with `llm::default_model()` and answers the first choice's text |
//! | `score:PROMPT\|CONT` | scores the continuation `CONT` after `PROMPT` with `llm::default_model()` and answers the log-probability sum, formatted with Rust's `{}` for `f64` (e.g. `-1.5`) |
//! | `state:KEY=VALUE` | sets state `KEY` to `VALUE`, reads it back and answers what it read |
//! | `seed` | answers `SEED/RANDOM`: `randomness::item_seed()` and a `u64` from `wasi:random` (via `getrandom`), both in decimal |
//! | `log:MSG` | logs `MSG` at info level and answers `logged` |
//! | anything else | fails with `plugin-error::invalid-input` |
//!
//! Host-call failures are returned as `plugin-error::host(...)`; a missing
//! default model as `plugin-error::invalid-input`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use techne_plugin_sdk::prelude::*;

/// The chaos solver.
pub struct Chaos;

impl Plugin for Chaos {
    fn metadata() -> Metadata {
        Metadata::new(
            "chaos",
            env!("CARGO_PKG_VERSION"),
            "Test plugin for the techne host: echoes, loops, allocates, overflows the stack, panics, \
             returns oversized output or calls the host, depending on the problem text.",
        )
    }
}

impl Solver for Chaos {
    fn solve(problem: &str, _params: &Params) -> Result<Solution, PluginError> {
        match parse(problem)? {
            Command::Echo(text) => Ok(Solution::new(text)),
            Command::Loop => spin_forever(),
            Command::Alloc(mib) => {
                allocate(mib);
                Ok(Solution::new(format!("allocated {mib}")))
            }
            Command::Recurse => Ok(Solution::new(recurse(black_box(0)).to_string())),
            Command::Panic => panic!("chaos plugin panicked on purpose"),
            Command::Oversize(bytes) => Ok(Solution::new("x".repeat(bytes))),
            Command::HangInHost => Ok(Solution::new(chat("Say something.")?)),
            Command::Chat(prompt) => Ok(Solution::new(chat(prompt)?)),
            Command::Score { prompt, continuation } => {
                let model = llm::resolve_model("")?;
                let scores = scoring::score(&model, prompt, &[continuation])?;
                let score = scores
                    .first()
                    .ok_or_else(|| PluginError::failed("the host returned no score for the continuation"))?;
                Ok(Solution::new(format!("{}", score.logprob_sum)))
            }
            Command::State { key, value } => {
                state::set_text(key, value)?;
                let read = state::get_text(key)?.ok_or_else(|| {
                    PluginError::failed(format!("state key `{key}` was set but reads back as missing"))
                })?;
                Ok(Solution::new(read))
            }
            Command::Seed => {
                let random = getrandom::u64().map_err(|e| PluginError::failed(format!("wasi:random failed: {e}")))?;
                Ok(Solution::new(format!("{}/{}", randomness::item_seed(), random)))
            }
            Command::Log(message) => {
                log::info(message);
                Ok(Solution::new("logged"))
            }
        }
    }
}

export_solver!(Chaos);

/// What the problem text asks for.
#[derive(Debug, PartialEq)]
enum Command<'a> {
    Echo(&'a str),
    Loop,
    Alloc(usize),
    Recurse,
    Panic,
    Oversize(usize),
    HangInHost,
    Chat(&'a str),
    Score { prompt: &'a str, continuation: &'a str },
    State { key: &'a str, value: &'a str },
    Seed,
    Log(&'a str),
}

fn parse(problem: &str) -> Result<Command<'_>, PluginError> {
    let command = match problem {
        "loop" => Command::Loop,
        "recurse" => Command::Recurse,
        "panic" => Command::Panic,
        "hang-in-host" => Command::HangInHost,
        "seed" => Command::Seed,
        _ => {
            let Some((verb, rest)) = problem.split_once(':') else {
                return Err(unknown(problem));
            };
            match verb {
                "echo" => Command::Echo(rest),
                "alloc" => Command::Alloc(number(verb, rest)?),
                "oversize" => Command::Oversize(number(verb, rest)?),
                "chat" => Command::Chat(rest),
                "log" => Command::Log(rest),
                "score" => {
                    let (prompt, continuation) = rest.split_once('|').ok_or_else(|| {
                        PluginError::invalid_input(format!("`score:` needs `PROMPT|CONTINUATION`, got `{rest}`"))
                    })?;
                    Command::Score { prompt, continuation }
                }
                "state" => {
                    let (key, value) = rest.split_once('=').ok_or_else(|| {
                        PluginError::invalid_input(format!("`state:` needs `KEY=VALUE`, got `{rest}`"))
                    })?;
                    Command::State { key, value }
                }
                _ => return Err(unknown(problem)),
            }
        }
    };
    Ok(command)
}

fn number(verb: &str, text: &str) -> Result<usize, PluginError> {
    text.trim()
        .parse()
        .map_err(|_| PluginError::invalid_input(format!("`{verb}:` needs a non-negative integer, got `{text}`")))
}

fn unknown(problem: &str) -> PluginError {
    PluginError::invalid_input(format!(
        "chaos does not understand `{problem}`; try echo:TEXT, loop, alloc:N, recurse, panic, oversize:N, \
         hang-in-host, chat:PROMPT, score:PROMPT|CONT, state:KEY=VALUE, seed or log:MSG"
    ))
}

fn chat(prompt: &str) -> Result<String, PluginError> {
    let model = llm::resolve_model("")?;
    let reply = llm::chat(&model, &[Message::user(prompt)], &Sampling::default())?;
    Ok(reply.text().to_owned())
}

/// Never returns and never calls the host.
fn spin_forever() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates `mib` MiB and writes to every 4 KiB page so that the memory is
/// really committed.
fn allocate(mib: usize) {
    let bytes = mib.saturating_mul(1 << 20);
    let mut block = vec![0u8; bytes];
    for page in block.iter_mut().step_by(4096) {
        *page = 1;
    }
    black_box(&block);
}

/// See [`recurse`].
static RECURSION_LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Recursion that is not a tail call and whose result depends on every
/// frame, so it can be neither turned into a loop nor optimised away; it only
/// ends when the wasm call stack is exhausted.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // Never true (nothing stores to RECURSION_LIMIT), but the optimiser
    // cannot know that, so the recursion is not provably infinite.
    if depth == RECURSION_LIMIT.load(Ordering::Relaxed) {
        return depth;
    }
    let below = recurse(depth.wrapping_add(1));
    below.rotate_left(7) ^ depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(parse("echo:a:b").unwrap(), Command::Echo("a:b"));
        assert_eq!(parse("echo:").unwrap(), Command::Echo(""));
        assert_eq!(parse("loop").unwrap(), Command::Loop);
        assert_eq!(parse("alloc:64").unwrap(), Command::Alloc(64));
        assert_eq!(parse("recurse").unwrap(), Command::Recurse);
        assert_eq!(parse("panic").unwrap(), Command::Panic);
        assert_eq!(parse("oversize:10").unwrap(), Command::Oversize(10));
        assert_eq!(parse("hang-in-host").unwrap(), Command::HangInHost);
        assert_eq!(parse("chat:hi there").unwrap(), Command::Chat("hi there"));
        assert_eq!(
            parse("score:The sky is| blue").unwrap(),
            Command::Score { prompt: "The sky is", continuation: " blue" }
        );
        assert_eq!(parse("state:k=v=w").unwrap(), Command::State { key: "k", value: "v=w" });
        assert_eq!(parse("seed").unwrap(), Command::Seed);
        assert_eq!(parse("log:hello").unwrap(), Command::Log("hello"));
    }

    #[test]
    fn rejects_unknown_or_malformed_problems() {
        for bad in ["", "nope", "alloc:x", "oversize:-1", "score:no-bar", "state:no-equals", "ECHO:x"] {
            assert!(matches!(parse(bad), Err(PluginError::InvalidInput(_))), "{bad}");
        }
    }

    #[test]
    fn echo_and_oversize_answer_without_the_host() {
        let p = Params::default();
        assert_eq!(Chaos::solve("echo:hi", &p).unwrap(), Solution::new("hi"));
        assert_eq!(Chaos::solve("oversize:5", &p).unwrap().answer, "xxxxx");
        assert_eq!(Chaos::solve("alloc:1", &p).unwrap().answer, "allocated 1");
        assert_eq!(Chaos::solve("state:k=v", &p).unwrap().answer, "v");
        assert_eq!(Chaos::solve("log:m", &p).unwrap().answer, "logged");
    }

    #[test]
    fn host_calls_without_a_default_model_are_invalid_input() {
        assert!(matches!(Chaos::solve("chat:hi", &Params::default()), Err(PluginError::InvalidInput(_))));
    }
}
