//! Many idle long-polling agents, held for a while (memory benchmark).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::client::Connection;
use crate::register_agents;

pub async fn run(addr: &str, agents: usize, hold: Duration) -> anyhow::Result<()> {
    let registered = register_agents(addr, "idle-agent", agents).await?;
    let connected = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + hold;
    let mut tasks = Vec::with_capacity(agents);
    for agent in registered {
        let (addr, connected) = (addr.to_owned(), connected.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::open(&addr).await?;
            connected.fetch_add(1, Ordering::Relaxed);
            while Instant::now() < deadline {
                let (status, _) = conn.send(agent.heartbeat(60)).await?;
                anyhow::ensure!(status == 200, "heartbeat: HTTP {status}");
            }
            anyhow::Ok(())
        }));
    }
    while connected.load(Ordering::Relaxed) < agents && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "idle: {} agents connected and long-polling",
        connected.load(Ordering::Relaxed)
    );
    let mut failed = 0;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    println!("idle: held for {:.0?}; {failed} agents failed", hold);
    Ok(())
}
