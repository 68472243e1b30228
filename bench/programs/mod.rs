//! Real programs for the allocator comparison: each one is a small but
//! complete program of a kind people write, run under whatever
//! `#[global_allocator]` the binary including this module installs
//! (`src/bin/prog_{pymem,glibc,mimalloc,jemalloc}.rs`), with its output
//! checked against a value computed independently of the allocations.
//!
//! * `tokio`: a multi-thread tokio runtime (2 workers); 1,000 pipelines of
//!   4 stages (4,000 tasks alive at once) pass 600,000 messages, each
//!   carrying a heap buffer of 16..2,048 bytes and a `String` tag; the
//!   second stage spawns a task per message
//!   and awaits it, the third replaces the buffer with a new one of another
//!   size, so buffers and tasks are allocated on one worker and freed on
//!   the other.
//! * `rayon`: 500,000 random strings of 4..64 bytes built in parallel, sorted
//!   with `par_sort`, upper-cased into new strings in parallel, and counted
//!   by first letter in per-chunk `HashMap`s reduced across threads.
//! * `parse`: a generated program of 60,000 `let` statements (about 6 MB of
//!   text: arithmetic, calls, string literals and lists) parsed into a
//!   `Box`ed AST, evaluated, and dropped, three times.
//!
//! Each prints one line:
//! `program=NAME ms=WALL_MS cpu_ms=CPU_MS faults=MINFLT hwm_kb=VMHWM check=ok`
//! (`ms`, `cpu_ms` and `faults`, the minor page faults of the process,
//! cover the workload, not the making of its input; `hwm_kb` is the
//! process's peak RSS, read from `/proc/self/status` at the end).

use std::collections::HashMap;
use std::time::Instant;

#[path = "../../tests/common/rng.rs"]
mod rng;
use rng::SplitMix64;

/// The programs, by name.
pub const PROGRAMS: [&str; 3] = ["tokio", "rayon", "parse"];

/// Runs the program named by the first argument and prints its line.
pub fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let (ms, cpu, faults, check) = match name.as_str() {
        "tokio" => timed(tokio_pipelines),
        "rayon" => timed(rayon_strings),
        "parse" => timed(parse_programs),
        _ => {
            eprintln!("usage: prog_<allocator> {}", PROGRAMS.join("|"));
            std::process::exit(2);
        }
    };
    println!(
        "program={name} ms={ms:.1} cpu_ms={cpu:.1} faults={faults} hwm_kb={} check={}",
        peak_rss_kb(),
        if check { "ok" } else { "WRONG" }
    );
    if !check {
        std::process::exit(1);
    }
}

/// Runs `setup`, then times the workload it returns: wall and CPU time (of
/// all the process's threads) in milliseconds, its minor page faults, and
/// whether its output was right. On a machine shared with other work the
/// CPU time is the steadier figure; the wall time also counts waiting for
/// a core.
fn timed<W: FnOnce() -> bool>(setup: impl FnOnce() -> W) -> (f64, f64, i64, bool) {
    let work = setup();
    let (start, before) = (Instant::now(), usage());
    let ok = work();
    let after = usage();
    (
        start.elapsed().as_secs_f64() * 1e3,
        cpu_ms(&after) - cpu_ms(&before),
        after.ru_minflt - before.ru_minflt,
        ok,
    )
}

/// The whole process's resource usage so far.
fn usage() -> libc::rusage {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    }
}

/// User plus system CPU time in `usage`, in milliseconds.
fn cpu_ms(usage: &libc::rusage) -> f64 {
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// Peak resident set size (`VmHWM`) in KiB.
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// FNV-1a over `bytes`, folded into `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
    }
    h
}

// ---- tokio: pipelines of tasks passing buffers -------------------------

const PIPELINES: usize = 1_000;
const MESSAGES_PER_PIPELINE: usize = 600;

struct Message {
    id: u64,
    tag: String,
    payload: Vec<u8>,
}

// The work per message is kept light (a buffer filled with one byte, a
// hash of its ends), so the program spends its time where tokio programs
// moving data do: in tasks, channels, wake-ups and buffers.

/// The ends of a buffer and its length: what the stages hash.
fn sample(buf: &[u8]) -> [u8; 17] {
    let mut s = [0u8; 17];
    s[..8].copy_from_slice(&buf[..8]);
    s[8..16].copy_from_slice(&buf[buf.len() - 8..]);
    s[16] = buf.len() as u8;
    s
}

/// The buffer of message `id` as the producer makes it.
fn first_payload(id: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(id);
    let len = rng.range(16, 2_048);
    let mut v = vec![id as u8; len];
    v[len - 1] = (len % 251) as u8;
    v
}

/// What stage 3 turns a buffer into: another size, derived from the old.
fn second_payload(old: &[u8], id: u64) -> Vec<u8> {
    let len = 16 + (fnv(id, &sample(old)) % 2_000) as usize;
    let mut v = vec![old[0].wrapping_add(1); len];
    v[..8].copy_from_slice(&old[old.len() - 8..]);
    v
}

/// The sink's contribution of one message (order-independent sum).
fn digest(m: &Message) -> u64 {
    fnv(fnv(m.id, m.tag.as_bytes()), &sample(&m.payload))
}

/// The same, computed without tasks or channels.
fn expected_tokio() -> u64 {
    let mut total = 0u64;
    for p in 0..PIPELINES {
        for k in 0..MESSAGES_PER_PIPELINE {
            let id = (p * MESSAGES_PER_PIPELINE + k) as u64;
            let first = first_payload(id);
            let sum = fnv(0, &sample(&first));
            let m = Message {
                id,
                tag: format!("msg-{id}-{}", sum % 997),
                payload: second_payload(&first, id),
            };
            total = total.wrapping_add(digest(&m));
        }
    }
    total
}

fn tokio_pipelines() -> impl FnOnce() -> bool {
    let expected = expected_tokio();
    move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("a tokio runtime");
        let total = rt.block_on(async {
            use tokio::sync::mpsc::channel;
            let mut sinks = Vec::new();
            for p in 0..PIPELINES {
                let (tx1, mut rx1) = channel::<Message>(32);
                let (tx2, mut rx2) = channel::<Message>(32);
                let (tx3, mut rx3) = channel::<Message>(32);
                // Stage 1: produce.
                tokio::spawn(async move {
                    for k in 0..MESSAGES_PER_PIPELINE {
                        let id = (p * MESSAGES_PER_PIPELINE + k) as u64;
                        let m = Message {
                            id,
                            tag: String::new(),
                            payload: first_payload(id),
                        };
                        if tx1.send(m).await.is_err() {
                            return;
                        }
                    }
                });
                // Stage 2: a task per message computes its tag.
                tokio::spawn(async move {
                    while let Some(mut m) = rx1.recv().await {
                        let (id, payload) = (m.id, std::mem::take(&mut m.payload));
                        let (tag, payload) = tokio::spawn(async move {
                            let sum = fnv(0, &sample(&payload));
                            (format!("msg-{id}-{}", sum % 997), payload)
                        })
                        .await
                        .expect("tag task");
                        m.tag = tag;
                        m.payload = payload;
                        if tx2.send(m).await.is_err() {
                            return;
                        }
                    }
                });
                // Stage 3: a new buffer of another size.
                tokio::spawn(async move {
                    while let Some(mut m) = rx2.recv().await {
                        m.payload = second_payload(&m.payload, m.id);
                        if tx3.send(m).await.is_err() {
                            return;
                        }
                    }
                });
                // Stage 4: the sink.
                sinks.push(tokio::spawn(async move {
                    let mut total = 0u64;
                    while let Some(m) = rx3.recv().await {
                        total = total.wrapping_add(digest(&m));
                    }
                    total
                }));
            }
            let mut total = 0u64;
            for s in sinks {
                total = total.wrapping_add(s.await.expect("sink"));
            }
            total
        });
        total == expected
    }
}

// ---- rayon: strings built, sorted and transformed in parallel ----------

const STRINGS: usize = 500_000;

fn random_string(i: usize) -> String {
    let mut rng = SplitMix64::new(i as u64 ^ 0xC0FF_EE00);
    let len = rng.range(4, 64);
    (0..len)
        .map(|_| char::from(b'a' + rng.below(26) as u8))
        .collect()
}

fn rayon_strings() -> impl FnOnce() -> bool {
    // Expected: the order-independent digest and letter counts, computed
    // one string at a time.
    let mut expected_sum = 0u64;
    let mut expected_letters = [0usize; 26];
    for i in 0..STRINGS {
        let s = random_string(i);
        expected_sum = expected_sum.wrapping_add(fnv(0, s.to_uppercase().as_bytes()));
        expected_letters[usize::from(s.as_bytes()[0] - b'a')] += 1;
    }
    move || {
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a rayon pool");
        pool.install(|| {
            let mut strings: Vec<String> =
                (0..STRINGS).into_par_iter().map(random_string).collect();
            strings.par_sort();
            let sorted = strings.par_windows(2).all(|w| w[0] <= w[1]);
            let upper: Vec<String> = strings.par_iter().map(|s| s.to_uppercase()).collect();
            drop(strings);
            let sum = upper
                .par_iter()
                .map(|s| fnv(0, s.as_bytes()))
                .reduce(|| 0, u64::wrapping_add);
            let counts: HashMap<char, usize> = upper
                .par_chunks(4_096)
                .map(|chunk| {
                    let mut m = HashMap::new();
                    for s in chunk {
                        *m.entry(char::from(s.as_bytes()[0])).or_insert(0) += 1;
                    }
                    m
                })
                .reduce(HashMap::new, |mut a, b| {
                    for (k, v) in b {
                        *a.entry(k).or_insert(0) += v;
                    }
                    a
                });
            drop(upper);
            let letters_ok = (0..26).all(|i| {
                counts
                    .get(&char::from(b'A' + i as u8))
                    .copied()
                    .unwrap_or(0)
                    == expected_letters[i]
            });
            sorted && sum == expected_sum && letters_ok
        })
    }
}

// ---- parse: a program parsed into an AST, evaluated, dropped ------------

const STATEMENTS: usize = 60_000;
const PARSE_ROUNDS: usize = 3;

/// A value of the little language.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i64),
    Str(String),
    List(Vec<Value>),
}

impl Value {
    fn weight(&self) -> i64 {
        match self {
            Value::Int(n) => *n,
            Value::Str(s) => s.len() as i64,
            Value::List(v) => v
                .iter()
                .fold(v.len() as i64, |a, x| a.wrapping_add(x.weight())),
        }
    }
}

#[derive(Debug)]
enum Expr {
    Int(i64),
    Str(String),
    Var(String),
    Binary(Box<Expr>, u8, Box<Expr>),
    Call(String, Vec<Expr>),
    List(Vec<Expr>),
}

#[derive(Debug)]
struct Let {
    name: String,
    value: Expr,
}

/// Builds the program text and, alongside, the value each statement binds
/// (so the evaluation of the parsed AST can be checked).
struct Generator {
    rng: SplitMix64,
    text: String,
    values: Vec<Value>,
}

impl Generator {
    fn expr(&mut self, depth: usize) -> Value {
        let choice = if depth == 0 {
            self.rng.below(3)
        } else {
            self.rng.below(7)
        };
        match choice {
            0 => {
                let n = self.rng.below(1_000) as i64;
                self.text.push_str(&n.to_string());
                Value::Int(n)
            }
            1 if !self.values.is_empty() => {
                // An earlier binding, through `len` so that values stay
                // small however long the chain of references.
                let i = self.rng.below(self.values.len());
                self.text.push_str(&format!("len(v{i})"));
                call("len", vec![self.values[i].clone()])
            }
            1 | 2 => {
                let len = self.rng.range(1, 24);
                let s: String = (0..len)
                    .map(|_| char::from(b'a' + self.rng.below(26) as u8))
                    .collect();
                self.text.push('"');
                self.text.push_str(&s);
                self.text.push('"');
                Value::Str(s)
            }
            3 | 4 => {
                let op = b"+-*"[self.rng.below(3)];
                self.text.push('(');
                let a = self.expr(depth - 1);
                self.text.push(' ');
                self.text.push(char::from(op));
                self.text.push(' ');
                let b = self.expr(depth - 1);
                self.text.push(')');
                apply(op, &a, &b)
            }
            5 => {
                let n = self.rng.range(0, 4);
                Value::List(self.items(n, depth - 1, '[', ']'))
            }
            _ => {
                let f = ["len", "concat", "sum"][self.rng.below(3)];
                let n = self.rng.range(1, 3);
                self.text.push_str(f);
                let args = self.items(n, depth - 1, '(', ')');
                call(f, args)
            }
        }
    }

    /// `n` expressions, comma-separated between `open` and `close`.
    fn items(&mut self, n: usize, depth: usize, open: char, close: char) -> Vec<Value> {
        self.text.push(open);
        let mut items = Vec::new();
        for k in 0..n {
            if k > 0 {
                self.text.push_str(", ");
            }
            items.push(self.expr(depth));
        }
        self.text.push(close);
        items
    }
}

fn apply(op: u8, a: &Value, b: &Value) -> Value {
    match (op, a, b) {
        (b'+', Value::Str(x), Value::Str(y)) => Value::Str(format!("{x}{y}")),
        (b'+', Value::List(x), Value::List(y)) => Value::List(x.iter().chain(y).cloned().collect()),
        _ => {
            let (x, y) = (a.weight(), b.weight());
            Value::Int(match op {
                b'+' => x.wrapping_add(y),
                b'-' => x.wrapping_sub(y),
                _ => x.wrapping_mul(y) % 1_000_003,
            })
        }
    }
}

fn call(f: &str, args: Vec<Value>) -> Value {
    match f {
        "len" => Value::Int(args.iter().map(Value::weight).fold(0, i64::wrapping_add)),
        "concat" => Value::Str(
            args.iter()
                .map(|a| match a {
                    Value::Str(s) => s.clone(),
                    other => other.weight().to_string(),
                })
                .collect(),
        ),
        _ => Value::List(args),
    }
}

/// A recursive-descent parser over the program's bytes.
struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.src.len() && self.src[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) {
        self.skip_ws();
        assert_eq!(
            self.src[self.pos],
            b,
            "expected {:?} at {}",
            char::from(b),
            self.pos
        );
        self.pos += 1;
    }

    fn ident(&mut self) -> String {
        self.skip_ws();
        let start = self.pos;
        while self.pos < self.src.len() && self.src[self.pos].is_ascii_alphanumeric() {
            self.pos += 1;
        }
        String::from_utf8(self.src[start..self.pos].to_vec()).expect("ASCII")
    }

    fn list(&mut self, close: u8) -> Vec<Expr> {
        let mut items = Vec::new();
        self.skip_ws();
        if self.src[self.pos] == close {
            self.pos += 1;
            return items;
        }
        loop {
            items.push(self.expr());
            self.skip_ws();
            let b = self.src[self.pos];
            self.pos += 1;
            if b == close {
                return items;
            }
            assert_eq!(b, b',', "expected ',' at {}", self.pos - 1);
        }
    }

    fn expr(&mut self) -> Expr {
        self.skip_ws();
        match self.src[self.pos] {
            b'0'..=b'9' => {
                let start = self.pos;
                while self.src[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let digits = std::str::from_utf8(&self.src[start..self.pos]).expect("ASCII");
                Expr::Int(digits.parse().expect("a number"))
            }
            b'"' => {
                self.pos += 1;
                let start = self.pos;
                while self.src[self.pos] != b'"' {
                    self.pos += 1;
                }
                let s = String::from_utf8(self.src[start..self.pos].to_vec()).expect("ASCII");
                self.pos += 1;
                Expr::Str(s)
            }
            b'(' => {
                self.pos += 1;
                let a = self.expr();
                self.skip_ws();
                let op = self.src[self.pos];
                self.pos += 1;
                let b = self.expr();
                self.eat(b')');
                Expr::Binary(Box::new(a), op, Box::new(b))
            }
            b'[' => {
                self.pos += 1;
                Expr::List(self.list(b']'))
            }
            _ => {
                let name = self.ident();
                self.skip_ws();
                if self.pos < self.src.len() && self.src[self.pos] == b'(' {
                    self.pos += 1;
                    Expr::Call(name, self.list(b')'))
                } else {
                    Expr::Var(name)
                }
            }
        }
    }

    fn program(&mut self) -> Vec<Let> {
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            if self.pos == self.src.len() {
                return out;
            }
            let kw = self.ident();
            assert_eq!(kw, "let");
            let name = self.ident();
            self.eat(b'=');
            let value = self.expr();
            self.eat(b';');
            out.push(Let { name, value });
        }
    }
}

fn eval(e: &Expr, env: &HashMap<String, Value>) -> Value {
    match e {
        Expr::Int(n) => Value::Int(*n),
        Expr::Str(s) => Value::Str(s.clone()),
        Expr::Var(v) => env[v].clone(),
        Expr::Binary(a, op, b) => apply(*op, &eval(a, env), &eval(b, env)),
        Expr::Call(f, args) => call(f, args.iter().map(|a| eval(a, env)).collect()),
        Expr::List(items) => Value::List(items.iter().map(|a| eval(a, env)).collect()),
    }
}

fn parse_programs() -> impl FnOnce() -> bool {
    let mut g = Generator {
        rng: SplitMix64::new(0x5EED_AB1E),
        text: String::new(),
        values: Vec::new(),
    };
    for i in 0..STATEMENTS {
        g.text.push_str(&format!("let v{i} = "));
        let v = g.expr(4);
        g.text.push_str(";\n");
        g.values.push(v);
    }
    let Generator { text, values, .. } = g;
    move || {
        let mut ok = true;
        for _ in 0..PARSE_ROUNDS {
            let program = Parser {
                src: text.as_bytes(),
                pos: 0,
            }
            .program();
            let mut env: HashMap<String, Value> = HashMap::new();
            for (i, stmt) in program.iter().enumerate() {
                let v = eval(&stmt.value, &env);
                ok &= v == values[i];
                env.insert(stmt.name.clone(), v);
            }
            drop(env);
            drop(program);
        }
        ok
    }
}
