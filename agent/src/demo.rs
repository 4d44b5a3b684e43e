//! A small simulated system instrumented with the agent, for `caracal demo`.
//!
//! Four services with two instances each, one [`Agent`] per instance, all in this
//! process: `gateway`, `orders`, `payments` and `inventory`, in front of a PostgreSQL
//! database and a Redis cache (simulated). About [`REQUESTS_PER_SECOND`] requests a
//! second arrive at the gateway:
//!
//! - `POST /checkout` (50%): gateway -> `orders` `POST /orders` -> SQL insert and
//!   cache write -> `payments` `POST /payments` (fails [`PAYMENT_FAILURE_RATE`] of the
//!   time, which fails the order and the checkout) -> `inventory`
//!   `POST /reservations` (slow [`INVENTORY_SLOW_RATE`] of the time: a lock wait in SQL).
//! - `GET /orders/{id}` (35%): gateway -> `orders` `GET /orders/{id}` -> cache read,
//!   and a SQL read on a miss ([`CACHE_MISS_RATE`]).
//! - `GET /products` (15%): gateway -> `inventory` `GET /stock` -> cache read.
//!
//! Calls between services propagate `traceparent`, so kept traces are whole across
//! services. Work is simulated with sleeps on a few threads, so the demo costs almost
//! no CPU.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::config::AgentBuilder;
use crate::context::{random_u64, TraceContext};
use crate::Agent;

/// Requests per second arriving at the gateway, all workers together.
pub const REQUESTS_PER_SECOND: u32 = 50;
/// Share of payments that are declined.
pub const PAYMENT_FAILURE_RATE: f64 = 0.02;
/// Share of inventory reservations that wait on a lock (250 to 400 ms).
pub const INVENTORY_SLOW_RATE: f64 = 0.01;
/// Share of order reads that miss the cache.
pub const CACHE_MISS_RATE: f64 = 0.2;
/// Threads sending requests.
const NUM_WORKERS: u32 = 4;
/// Instances per service.
const NUM_INSTANCES: usize = 2;
/// How long each agent may take to deliver its last report when the demo stops.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs the demo, reporting to `collector_addrs`, until `stop` resolves; then flushes
/// every agent. Must be awaited inside a tokio runtime (it joins its threads on the
/// blocking pool).
pub async fn run(collector_addrs: Vec<String>, stop: impl Future<Output = ()>) {
    let system = Arc::new(System::new(&collector_addrs));
    let stopped = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..NUM_WORKERS)
        .filter_map(|index| {
            let system = Arc::clone(&system);
            let stopped = Arc::clone(&stopped);
            thread::Builder::new()
                .name(format!("caracal-demo-{index}"))
                .spawn(move || work(&system, &stopped))
                .map_err(|error| tracing::warn!(%error, "failed to start a demo worker"))
                .ok()
        })
        .collect();
    tracing::info!(
        ?collector_addrs,
        requests_per_second = REQUESTS_PER_SECOND,
        "demo system running"
    );
    stop.await;
    stopped.store(true, Ordering::Relaxed);
    let joined = tokio::task::spawn_blocking(move || {
        for worker in workers {
            let _ = worker.join();
        }
        thread::scope(|scope| {
            for agent in system.agents() {
                scope.spawn(move || {
                    if let Err(error) = agent.shutdown(SHUTDOWN_TIMEOUT) {
                        tracing::warn!(service = %agent.config().service_name, %error, "demo agent did not flush");
                    }
                });
            }
        });
    })
    .await;
    if joined.is_err() {
        tracing::warn!("demo shutdown panicked");
    }
    tracing::info!("demo system stopped");
}

/// The services, each a pair of agents.
#[derive(Debug)]
struct System {
    gateway: [Agent; NUM_INSTANCES],
    orders: [Agent; NUM_INSTANCES],
    payments: [Agent; NUM_INSTANCES],
    inventory: [Agent; NUM_INSTANCES],
}

impl System {
    fn new(collector_addrs: &[String]) -> Self {
        let service = |name: &str| {
            std::array::from_fn(|index| {
                AgentBuilder::from_process_env()
                    .service_name(name)
                    .instance(format!(
                        "{name}-{}-{:06x}",
                        index + 1,
                        random_u64() & 0xff_ffff
                    ))
                    .host(format!("demo-host-{}", index + 1))
                    .collector_addrs(collector_addrs.iter().cloned())
                    .start()
            })
        };
        Self {
            gateway: service("gateway"),
            orders: service("orders"),
            payments: service("payments"),
            inventory: service("inventory"),
        }
    }

    fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.gateway
            .iter()
            .chain(&self.orders)
            .chain(&self.payments)
            .chain(&self.inventory)
    }
}

/// A uniform random number in `[0, 1)`.
fn chance() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// One of the instances, at random (a load balancer).
fn pick(instances: &[Agent; NUM_INSTANCES]) -> &Agent {
    &instances[(random_u64() % NUM_INSTANCES as u64) as usize]
}

/// Sleeps between `low` and `high` microseconds: simulated work.
fn busy(low: u64, high: u64) {
    thread::sleep(Duration::from_micros(low + random_u64() % (high - low + 1)));
}

/// One worker: sends requests at its share of the rate until stopped.
fn work(system: &System, stopped: &AtomicBool) {
    let period = Duration::from_secs(1) * NUM_WORKERS / REQUESTS_PER_SECOND;
    // Spread the workers over the period.
    thread::sleep(Duration::from_micros(
        random_u64() % period.as_micros() as u64,
    ));
    let mut next = Instant::now();
    while !stopped.load(Ordering::Relaxed) {
        gateway(system);
        next += period;
        match next.checked_duration_since(Instant::now()) {
            Some(wait) => thread::sleep(wait),
            None => next = Instant::now(),
        }
    }
}

fn gateway(system: &System) {
    let agent = pick(&system.gateway);
    let roll = chance();
    let route = if roll < 0.5 {
        "POST /checkout"
    } else if roll < 0.85 {
        "GET /orders/{id}"
    } else {
        "GET /products"
    };
    let request = agent.transaction("URL", route);
    request.add_data("http.route", route);
    busy(200, 800);
    let ok = match route {
        "POST /checkout" => {
            let call = agent.transaction("Call", "orders:POST /orders");
            let ok = orders_create(system, call.context());
            if !ok {
                call.set_status_error("orders answered 402");
            }
            ok
        }
        "GET /orders/{id}" => {
            let call = agent.transaction("Call", "orders:GET /orders/{id}");
            orders_get(system, call.context());
            true
        }
        _ => {
            let call = agent.transaction("Call", "inventory:GET /stock");
            inventory_stock(system, call.context());
            true
        }
    };
    if ok {
        agent.event("URL.Status", "200");
    } else {
        request.set_status_error("checkout failed");
        agent.event("URL.Status", "402");
    }
}

fn orders_create(system: &System, parent: TraceContext) -> bool {
    let agent = pick(&system.orders);
    let request = agent.transaction_with_parent("URL", "POST /orders", Some(&parent));
    {
        let _insert = agent.transaction("SQL", "postgresql:INSERT orders");
        busy(1_500, 4_000);
    }
    {
        let _write = agent.transaction("Cache", "redis:SET order");
        busy(100, 400);
    }
    let paid = {
        let call = agent.transaction("Call", "payments:POST /payments");
        let paid = payments_charge(system, call.context());
        if !paid {
            call.set_status_error("payment declined");
        }
        paid
    };
    if !paid {
        request.set_status_error("payment declined");
        return false;
    }
    {
        let call = agent.transaction("Call", "inventory:POST /reservations");
        inventory_reserve(system, call.context());
    }
    agent.counter("orders.created", 1);
    true
}

fn orders_get(system: &System, parent: TraceContext) {
    let agent = pick(&system.orders);
    let _request = agent.transaction_with_parent("URL", "GET /orders/{id}", Some(&parent));
    let hit = {
        let _read = agent.transaction("Cache", "redis:GET order");
        busy(100, 300);
        chance() >= CACHE_MISS_RATE
    };
    agent.event("Cache", if hit { "order.hit" } else { "order.miss" });
    if !hit {
        let _select = agent.transaction("SQL", "postgresql:SELECT orders");
        busy(1_000, 3_000);
    }
}

/// The error a declined payment records.
#[derive(Debug, thiserror::Error)]
#[error("card declined by issuer")]
struct PaymentDeclined;

fn payments_charge(system: &System, parent: TraceContext) -> bool {
    let agent = pick(&system.payments);
    let _request = agent.transaction_with_parent("URL", "POST /payments", Some(&parent));
    {
        let _insert = agent.transaction("SQL", "postgresql:INSERT payments");
        busy(1_000, 3_000);
    }
    let started = Instant::now();
    let approved = {
        let _authorize = agent.transaction("Call", "card-network:POST /authorize");
        busy(4_000, 12_000);
        chance() >= PAYMENT_FAILURE_RATE
    };
    agent.duration("payments.authorize", started.elapsed());
    if !approved {
        agent.record_error(&PaymentDeclined);
    }
    approved
}

fn inventory_reserve(system: &System, parent: TraceContext) {
    let agent = pick(&system.inventory);
    let _request = agent.transaction_with_parent("URL", "POST /reservations", Some(&parent));
    {
        let _decrement = agent.transaction("Cache", "redis:DECR stock");
        busy(100, 300);
    }
    {
        let _update = agent.transaction("SQL", "postgresql:UPDATE stock");
        if chance() < INVENTORY_SLOW_RATE {
            busy(250_000, 400_000);
        } else {
            busy(1_000, 3_000);
        }
    }
    agent.gauge("inventory.stock", (random_u64() % 1_000) as f64);
}

fn inventory_stock(system: &System, parent: TraceContext) {
    let agent = pick(&system.inventory);
    let _request = agent.transaction_with_parent("URL", "GET /stock", Some(&parent));
    let _read = agent.transaction("Cache", "redis:MGET stock");
    busy(100, 400);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn demo_runs_and_stops() {
        // Nothing listens on port 1: the demo must run and stop all the same.
        let started = Instant::now();
        run(
            vec!["127.0.0.1:1".into()],
            tokio::time::sleep(Duration::from_millis(300)),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
