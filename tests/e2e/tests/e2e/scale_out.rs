//! Scale-out: two delegate replicas (each a full `Host`, its own vault) over one real
//! `redis-server` and one devstack behave as one system: one On-Behalf-Of exchange for the
//! fleet, a Redis outage costs extra exchanges (counted) and never a failed invocation, and
//! Redis never holds a token, a user id, an email or a tenant in clear.

use base64::Engine;
use delegate_app::Host;
use delegate_config::Config;
use delegate_devstack::{DevStack, DevStackOptions, idp_defaults as ids};
use delegate_e2e::redis::RedisServer;
use delegate_e2e::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const OBO_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ADMIN_TOKEN: &str = "admin-token-for-scale-out-tests-0123456789";
const PROMPT: &str = "Show me 5 incidents assigned to me";
/// The whole e2e suite runs in parallel on two cores: generous Redis time limits keep a
/// starved test thread from reading as an outage (the bounds themselves are unit-tested in
/// host/vault).
const PATIENT: &str = "timeout_ms = 2000\nlock_wait_ms = 10000\nlock_ttl_ms = 20000\n";

pub(crate) struct Replicas {
    pub(crate) stack: DevStack,
    hosts: Vec<Host>,
    pub(crate) urls: Vec<String>,
    admins: Vec<String>,
    /// The vault key (base64), to open what Redis holds in the scan.
    pub(crate) key_b64: String,
    pub(crate) dir: PathBuf,
    /// The `[vault.cache]` sections every replica gets (empty: the in-memory cache).
    cache_section: String,
    token_file: PathBuf,
}

fn scratch_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "delegate-e2e-scale-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 32 bytes that differ per run (a test key; production keys come from `openssl rand`).
fn test_key(dir: &Path) -> String {
    use sha2::Digest;
    let seed = format!("{}-{:?}-{}", std::process::id(), std::time::SystemTime::now(), dir.display());
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(seed.as_bytes()))
}

/// `n` replicas of the Jane setup, their vaults on `redis` (`None`: the in-memory cache, for
/// the one-replica baseline), each with an admin listener for `/metrics`. `redis_extra` adds
/// `[vault.cache.redis]` keys.
pub(crate) async fn replicas(n: usize, redis: Option<&RedisServer>, redis_extra: &str) -> Replicas {
    let mut fleet = Replicas::start(redis, redis_extra).await;
    for _ in 0..n {
        fleet.add(|toml| toml).await;
    }
    fleet
}

impl Replicas {
    /// The devstack and the files the replicas share, with no replica yet.
    async fn start(redis: Option<&RedisServer>, redis_extra: &str) -> Self {
        let dir = scratch_dir();
        let stack = DevStack::start(&DevStackOptions::ephemeral(&dir)).await.unwrap();
        let key_b64 = test_key(&dir);
        let key_file = dir.join("vault.key");
        std::fs::write(&key_file, format!("{key_b64}\n")).unwrap();
        let token_file = dir.join("admin-token");
        std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
        let cache_section = redis.map_or_else(String::new, |redis| {
            format!(
                "\n[vault.cache]\nbackend = \"redis\"\n\n[vault.cache.redis]\nurl = {:?}\nkey = {{ file = {:?} }}\n{redis_extra}\n",
                redis.url(),
                key_file.display().to_string(),
            )
        });
        Self {
            stack,
            hosts: Vec::new(),
            urls: Vec::new(),
            admins: Vec::new(),
            key_b64,
            dir,
            cache_section,
            token_file,
        }
    }

    /// Starts one more replica, its config the Jane setup edited by `edit`; returns its index.
    pub(crate) async fn add(&mut self, edit: impl FnOnce(String) -> String) -> usize {
        let i = self.hosts.len();
        let audit = self.dir.join(format!("audit-{i}.jsonl"));
        let mut toml = self
            .stack
            .delegate_config(
                "127.0.0.1:0".parse().unwrap(),
                Path::new(delegate_artifacts::SERVICENOW_AGENT),
                &audit.display().to_string(),
            )
            .replace("[server]\n", "[server]\nmax_concurrency = 64\n");
        // Later replicas load the code the first compiled.
        let cache_dir = self.dir.join("compiled");
        toml.push_str(&format!("\n[engine]\ncache_dir = {:?}\n", cache_dir.display().to_string()));
        toml.push_str(&format!(
            "\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
            self.token_file.display().to_string()
        ));
        toml.push_str(&self.cache_section);
        let config = Config::from_toml(&edit(toml), &self.dir).unwrap();
        let host = Host::start_with(&config, None, delegate_devstack::aws_credentials()).await.unwrap();
        self.urls.push(format!("http://{}", host.addr));
        self.admins.push(format!("http://{}", host.admin_addr.unwrap()));
        self.hosts.push(host);
        i
    }

    pub(crate) fn obo_calls(&self) -> u64 {
        self.stack.idp.idp().grant_calls(OBO_GRANT)
    }

    /// Jane asks replica `i` for her incidents, with a Token A of her own (a new one each
    /// time, as separate clients would have).
    pub(crate) async fn ask(&self, i: usize) -> Seen {
        self.ask_as(ids::JANE, i).await
    }

    /// `user` asks replica `i` (a fresh Token A each time).
    pub(crate) async fn ask_as(&self, user: &str, i: usize) -> Seen {
        self.ask_tagged(user, i).await.0
    }

    /// `user` asks replica `i`; also returns the answer's `X-Delegate-Plugin` (`name@digest`
    /// of the component that served it).
    pub(crate) async fn ask_tagged(&self, user: &str, i: usize) -> (Seen, String) {
        let token = self.stack.token_a(user, Duration::from_secs(900)).unwrap();
        let resp = client()
            .post(format!("{}/invocations", self.urls[i % self.urls.len()]))
            .bearer_auth(token.expose())
            .json(&json!({ "prompt": PROMPT }))
            .send()
            .await
            .unwrap();
        let served_by = resp
            .headers()
            .get(delegate_server::PLUGIN_HEADER)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (collect(resp).await, served_by)
    }

    /// `delegate_vault_shared_cache_events_total{event}` summed over the replicas (0 when a
    /// replica has not counted that event yet: the series appears on its first count).
    pub(crate) async fn shared_cache_events(&self, event: &str) -> u64 {
        let series = format!("delegate_vault_shared_cache_events_total{{event=\"{event}\"}} ");
        let mut total = 0;
        for admin in &self.admins {
            let text = client()
                .get(format!("{admin}/metrics"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            total += text
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .map_or(0, |v| v.split_whitespace().next().unwrap().parse::<u64>().unwrap());
        }
        total
    }

    pub(crate) async fn shutdown(self) {
        for host in self.hosts {
            let _ = host.shutdown(Duration::from_secs(5)).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn assert_janes_answer(seen: &Seen) {
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(crate::jane::numbers_in(&seen.text).len(), 5, "{}", seen.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_invocations_over_two_replicas_make_one_obo_exchange() {
    let redis = RedisServer::start();
    let fleet = replicas(2, Some(&redis), PATIENT).await;
    // An exchange as slow as a busy Entra: both replicas miss while it runs, so without the
    // cross-replica lock each would make its own.
    fleet
        .stack
        .idp
        .idp()
        .set_token_fault(delegate_devstack_idp::TokenFault::Slow(Duration::from_millis(500)));
    let all = futures::future::join_all((0..100).map(|i| fleet.ask(i))).await;
    for seen in &all {
        assert_janes_answer(seen);
    }
    // One exchange for the whole fleet, not one per replica.
    assert_eq!(fleet.obo_calls(), 1);
    // At most one lock per replica (its single-flight in front): a replica that missed just
    // before the winner shared its token may take the freed lock, then finds the token on its
    // re-check instead of exchanging. Nobody fell back to a local exchange.
    let won = fleet.shared_cache_events("lock_won").await;
    assert!((1..=2).contains(&won), "{won} locks won");
    assert_eq!(fleet.shared_cache_events("fallback_exchange").await, 0);
    assert_eq!(fleet.shared_cache_events("error").await, 0);
    assert!(fleet.shared_cache_events("hit").await >= 1);

    // What Redis holds: one sealed token (the lock is gone), with a TTL within Token B's life.
    let dump = redis.dump();
    assert_eq!(
        dump.len(),
        1,
        "{:?}",
        dump.iter().map(|(k, _, _)| String::from_utf8_lossy(k)).collect::<Vec<_>>()
    );
    let (key, value, ttl) = &dump[0];
    let key = std::str::from_utf8(key).unwrap();
    let name = key.strip_prefix("delegate:v1:token:").unwrap();
    assert!(name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    assert!(*ttl > 0 && *ttl <= 3600 * 1000, "TTL {ttl} ms");
    // The sealed value does hold Jane's Token B: open it with the vault key (so the scan
    // below looks at a real token's ciphertext, not at nothing).
    let key_bytes = delegate_vault::seal::decode_key(&delegate_secret::Secret::new(&*fleet.key_b64)).unwrap();
    let sealer = delegate_vault::seal::Sealer::new(&key_bytes, None);
    let opened = sealer.open(name, value).unwrap();
    assert!(opened.token.expose().starts_with("eyJ"), "Token B is a JWT");
    scan_for_secrets(&redis, &fleet, opened.token.expose());
    fleet.shutdown().await;
}

/// Issue 13's "every replica converges on the configured digest": two replicas started from
/// the same `source = "oci://…@sha256:…"` serve Jane with that build; a replica started from a
/// config naming another digest (the next pod of a rollout) serves that build, while the first
/// two keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_serves_the_digest_its_config_names() {
    use crate::oci::{agent_from_registry, push_servicenow_agent};
    let mut fleet = Replicas::start(None, "").await;
    let registry = delegate_e2e::registry::Registry::start(&fleet.dir.join("registry")).await;
    let agent = std::fs::read(delegate_artifacts::SERVICENOW_AGENT).unwrap();
    let (old, new) = (rebuilt(&agent, "scale-out-1"), rebuilt(&agent, "scale-out-2"));
    let old_ref = push_servicenow_agent(&registry, &fleet.stack, &old, "1.0.0").await;
    let new_ref = push_servicenow_agent(&registry, &fleet.stack, &new, "2.0.0").await;
    assert_ne!(old_ref, new_ref);
    let served = |build: &[u8]| format!("servicenow-agent@{}", sha256_digest(build));

    for _ in 0..2 {
        fleet.add(|toml| agent_from_registry(&toml, &registry, &old_ref)).await;
    }
    for i in 0..2 {
        let (seen, by) = fleet.ask_tagged(ids::JANE, i).await;
        assert_janes_answer(&seen);
        assert_eq!(by, served(&old), "replica {i}");
    }

    let next = fleet.add(|toml| agent_from_registry(&toml, &registry, &new_ref)).await;
    let (seen, by) = fleet.ask_tagged(ids::JANE, next).await;
    assert_janes_answer(&seen);
    assert_eq!(by, served(&new), "the replica on the new config");
    for i in 0..2 {
        assert_eq!(fleet.ask_tagged(ids::JANE, i).await.1, served(&old), "replica {i} keeps its digest");
    }
    fleet.shutdown().await;
}

/// Nothing in Redis (keys or values) contains, in clear, hex or base64: a JWT, Jane's Token A
/// or Token B, her user ids (oid, sub), her email/UPN, her name or her tenant.
fn scan_for_secrets(redis: &RedisServer, fleet: &Replicas, token_b: &str) {
    let token_a = fleet.stack.token_a(ids::JANE, Duration::from_secs(900)).unwrap();
    let payload = token_a.expose().split('.').nth(1).unwrap().to_owned();
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
            .unwrap();
    let mut needles: Vec<String> = vec![
        ids::JANE.to_owned(),
        ids::TENANT_ID.to_owned(),
        "eyJ".to_owned(),
        token_a.expose().to_owned(),
        token_b.to_owned(),
        token_b.rsplit('.').next().unwrap().to_owned(),
    ];
    for claim in ["oid", "sub", "tid", "upn", "preferred_username", "email", "unique_name", "name"] {
        if let Some(v) = claims[claim].as_str() {
            needles.push(v.to_owned());
        }
    }
    assert!(needles.len() >= 9, "Token A lacks the identity claims this scan checks: {claims}");
    let b64 = &base64::engine::general_purpose::STANDARD;
    let b64url = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let mut forms = Vec::new();
    for n in &needles {
        forms.push(n.clone());
        forms.push(n.to_lowercase());
        forms.push(hex(n));
        forms.push(hex(n).to_uppercase());
        // Base64 of a prefix long enough to be distinctive, independent of padding.
        let cut = &n.as_bytes()[..n.len().min(12)];
        forms.push(b64.encode(cut).trim_end_matches('=').to_owned());
        forms.push(b64url.encode(cut));
    }
    let dump = redis.dump();
    assert!(!dump.is_empty());
    for (key, value, _) in &dump {
        for haystack in [key, value] {
            let text = String::from_utf8_lossy(haystack).to_lowercase();
            for form in &forms {
                assert!(
                    form.len() < 3 || !text.contains(&form.to_lowercase()),
                    "Redis holds {form:?} (from an identity or token) in {}",
                    String::from_utf8_lossy(key)
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)] // the outage's figures are reported, not asserted
async fn redis_killed_mid_run_costs_extra_exchanges_but_no_failed_invocation() {
    let mut redis = RedisServer::start();
    let fleet = replicas(2, Some(&redis), PATIENT).await;
    // Warm: the fleet's one exchange for Jane, then both replicas serve her from Redis.
    assert_janes_answer(&fleet.ask(0).await);
    let first = futures::future::join_all((0..20).map(|i| fleet.ask(i))).await;
    first.iter().for_each(assert_janes_answer);
    assert_eq!(fleet.obo_calls(), 1, "served from Redis");

    // Mid-run: Redis dies while invocations are in flight. Two new users (one per replica)
    // are held in their On-Behalf-Of exchange by a slow IdP, each holding its replica's Redis
    // lock, alongside 20 of Jane's (no exchange: they may finish before the kill or after).
    // The kill waits for the gate (both exchanges have reached the IdP), so the held
    // invocations store their Token B, release their lock and make their next ServiceNow
    // call against a dead Redis.
    let held_users = [ids::SECURITY_ANALYST, "audrey.kim@company.com"];
    let idp = fleet.stack.idp.idp();
    idp.set_token_fault(delegate_devstack_idp::TokenFault::Slow(Duration::from_secs(2)));
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let held = futures::future::join_all(held_users.iter().enumerate().map(|(i, user)| {
        let finished = &finished;
        let fleet = &fleet;
        async move {
            let seen = fleet.ask_as(user, i).await;
            finished.fetch_add(1, Ordering::SeqCst);
            seen
        }
    }));
    let during = futures::future::join_all((0..20).map(|i| fleet.ask(i)));
    let kill = async {
        let gate = async {
            while fleet.obo_calls() < 1 + held_users.len() as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), gate).await.expect("the held exchanges never started");
        assert_eq!(finished.load(Ordering::SeqCst), 0, "the held invocations are in flight when Redis dies");
        redis.kill();
    };
    let (held, during, ()) = tokio::join!(held, during, kill);
    for seen in &held {
        assert_eq!((seen.status, seen.error_type.as_deref()), (200, None), "{seen:?}");
    }
    during.iter().for_each(assert_janes_answer);
    idp.set_token_fault(delegate_devstack_idp::TokenFault::None);
    let exchanged = fleet.obo_calls();
    assert_eq!(exchanged, 1 + held_users.len() as u64, "one exchange per held user");
    // The held invocations met the dead Redis (storing Token B and releasing the lock failed,
    // two counted errors each) before anyone below asks: what follows runs in the outage.
    let errors = fleet.shared_cache_events("error").await;
    assert!(errors >= 2 * held_users.len() as u64, "{errors} errors: the outage is counted");
    assert_eq!(fleet.shared_cache_events("fallback_exchange").await, 0, "the held users had the lock");

    let started = std::time::Instant::now();
    let after = futures::future::join_all((0..20).map(|i| fleet.ask(i))).await;
    let jane_down = started.elapsed();
    after.iter().for_each(assert_janes_answer);
    // Each replica kept the token it had read: Jane costs no exchange while Redis is down.
    assert_eq!(fleet.obo_calls(), exchanged);
    assert!(fleet.shared_cache_events("local_hit").await >= 1);

    // Users nobody has exchanged for yet: each replica exchanges once per user on its own
    // (its single-flight and in-memory copy in front), so the outage costs at most one
    // exchange per user per replica, each a counted fallback, and no failed invocation.
    let users =
        [ids::HR_ANALYST, "ravi.patel@company.com", "maria.garcia@company.com", "tom.baker@company.com"];
    let asks = (0..40).map(|i| fleet.ask_as(users[i % users.len()], i / users.len()));
    for seen in futures::future::join_all(asks).await {
        assert_eq!(seen.status, 200, "{seen:?}");
        assert_eq!(seen.error_type, None, "{seen:?}");
    }
    let extra = fleet.obo_calls() - exchanged;
    let fallbacks = fleet.shared_cache_events("fallback_exchange").await;
    assert!((4..=8).contains(&extra), "{extra} exchanges for 4 new users over 2 replicas");
    assert_eq!(fallbacks, extra, "every exchange during the outage is a counted fallback");
    assert!(fleet.shared_cache_events("error").await >= 2, "the outage is counted");
    eprintln!(
        "scale_out outage: 20 Jane invocations with Redis down took {jane_down:?} and 0 exchanges; 40 invocations of 4 new users made {extra} exchanges"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_foreign_entry_is_a_counted_miss_not_an_error() {
    let redis = RedisServer::start();
    let fleet = replicas(1, Some(&redis), PATIENT).await;
    assert_janes_answer(&fleet.ask(0).await);
    assert_eq!(fleet.obo_calls(), 1);
    // Overwrite the sealed token with garbage (an attacker with Redis access, or another
    // deployment's value): the next invocation is a miss, counted, and exchanges again.
    let dump = redis.dump();
    let (key, _, _) = dump.iter().find(|(k, _, _)| k.starts_with(b"delegate:v1:token:")).unwrap();
    redis.set(key, b"\x01not-a-sealed-value-but-long-enough-to-look-like-one-0123456789");
    assert_janes_answer(&fleet.ask(0).await);
    assert_eq!(fleet.obo_calls(), 2);
    // Counted twice: the lookup, and the re-check made after taking the exchange lock.
    assert_eq!(fleet.shared_cache_events("undecryptable").await, 2);
    assert_eq!(fleet.shared_cache_events("error").await, 0);
    // The exchange replaced the bad value: the next invocation is a hit.
    assert_janes_answer(&fleet.ask(0).await);
    assert_eq!(fleet.obo_calls(), 2);
    fleet.shutdown().await;
}
