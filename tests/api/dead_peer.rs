//! A client that vanishes without closing its connection (no FIN, no RST:
//! its network is gone) holds its event stream's slot only until
//! `server.tcp_user_timeout_s` after data sent to it went unacknowledged.
//!
//! For real: the client (`curl`) runs in a network namespace of its own,
//! joined to this one by a veth pair (addresses of this test's own link,
//! never a real network), and its end of the link is then taken down. Needs
//! root and iproute2's `ip netns`; where either is missing the test says so
//! and does nothing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::fixtures::Network;
use crate::helpers::{TestApp, spawn_app_with};

/// A network namespace with a veth pair to this one; removed on drop.
struct Link {
    netns: String,
    server_if: String,
    client_if: String,
    server_ip: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Link {
    fn new() -> Option<Self> {
        let id = std::process::id() % 100_000;
        let netns = format!("relais-t{id}");
        let (server_if, client_if) = (format!("rlss{id}"), format!("rlsc{id}"));
        let net = format!("10.231.{}", id % 250);
        let (server_ip, client_ip) = (format!("{net}.1"), format!("{net}.2"));
        if !ip(&["netns", "add", &netns]) {
            return None;
        }
        let link = Self {
            netns,
            server_if,
            client_if,
            server_ip,
        };
        let server_if = link.server_if.as_str();
        let ns = link.netns.as_str();
        let ok = ip(&[
            "link",
            "add",
            server_if,
            "type",
            "veth",
            "peer",
            "name",
            &link.client_if,
            "netns",
            ns,
        ]) && ip(&[
            "addr",
            "add",
            &format!("{}/30", link.server_ip),
            "dev",
            server_if,
        ]) && ip(&["link", "set", server_if, "up"])
            && ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{client_ip}/30"),
                "dev",
                &link.client_if,
            ]);
        (ok && link.set_client_link(true)).then_some(link)
    }

    fn set_client_link(&self, up: bool) -> bool {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.netns, "link", "set", &self.client_if, state])
    }

    /// `curl -N` on the event stream from the client's namespace; returns
    /// once `stream.ready` arrived.
    fn open_stream(&self, app: &TestApp, token: &str) -> Child {
        let port = app.address.rsplit(':').next().unwrap();
        let url = format!("http://{}:{port}/api/v1/events", self.server_ip);
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-sN",
                "--max-time",
                "120",
            ])
            .args(["-H", &format!("authorization: Bearer {token}"), &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("curl in the client's namespace");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("event: stream.ready") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(15))
            .expect("stream.ready through the veth link");
        child
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting one end deletes the pair (the namespace alone would keep
        // it while the killed client's socket lingers there).
        ip(&["link", "del", &self.server_if]);
        ip(&["netns", "del", &self.netns]);
    }
}

/// Opens a stream from the namespace, takes the client's link down and
/// kills the client (its FIN is lost with the link); says whether the
/// server dropped the stream within `wait`.
async fn vanish(link: &Link, tcp_user_timeout_s: u64, wait: Duration) -> bool {
    let app = spawn_app_with(|s| {
        // Reachable from the veth link too (the test's requests use loopback).
        s.server.bind = "0.0.0.0:0".into();
        s.events.heartbeat_s = 1;
        s.server.tcp_user_timeout_s = tcp_user_timeout_s;
    })
    .await;
    let net = Network::new(&app).await;
    assert!(link.set_client_link(true));
    let mut client = link.open_stream(&app, &net.gp.token);
    assert_eq!(app.state.events.open_streams(), 1);
    assert!(link.set_client_link(false), "client link down");
    client.kill().unwrap();
    client.wait().unwrap();
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if app.state.events.open_streams() == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[actix_web::test]
async fn a_vanished_client_frees_its_stream_within_the_user_timeout() {
    let Some(link) = Link::new() else {
        eprintln!("skipped: needs root and `ip netns` (iproute2) for a client that vanishes");
        return;
    };
    // The kernel's default: the heartbeats are retransmitted for minutes and
    // the stream stays open (what this setting is for).
    assert!(
        !vanish(&link, 0, Duration::from_secs(6)).await,
        "without TCP_USER_TIMEOUT the vanished client's stream stays"
    );
    // 2 s: the first unacknowledged heartbeat (1 s) fails the connection
    // 2 s later; the stream, its slot (and its lease) go with it.
    assert!(
        vanish(&link, 2, Duration::from_secs(10)).await,
        "the vanished client's stream ended"
    );
}
