//! `dingtalk-sim`: the DingTalk simulator as a server.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dingsync::sim::{SimOptions, SimServer, Simulator, StreamSimOptions};

/// A stateful in-memory DingTalk (oapi) for tests, benchmarks and demos.
///
/// Each --app has its own organisation (root department 1). DingTalk endpoints:
/// GET /gettoken, POST /v1.0/oauth2/accessToken, POST /topapi/v2/user/{create,update,get,
/// delete,list,getbymobile}, /topapi/user/{listid,count},
/// /topapi/v2/department/{create,update,delete,get,listsub,listsubid},
/// /topapi/message/corpconversation/{asyncsend_v2,recall,getsendprogress,getsendresult};
/// with DingTalk's field rules and errcodes, token expiry, and a per-app-per-path rate limit
/// answering errcode 90018.
///
/// Admin API (JSON): POST /_sim/apps {appkey,appsecret,agent_id}; GET /_sim/apps/KEY (org
/// dump); POST /_sim/apps/KEY/api/PATH (a console edit: same rules, no token, not counted);
/// GET|DELETE /_sim/calls[?appkey=KEY] (call counters); GET /_sim/clock;
/// POST /_sim/clock/advance {seconds}; POST|DELETE /_sim/faults
/// {path,appkey?,action:{kind:errcode|http|delay|drop|drop_after|html|ip_block,...},count?,probability?};
/// POST /_sim/tokens/invalidate {appkey?}; POST /_sim/limits {qps_per_path}.
///
/// Stream mode: POST /v1.0/gateway/connections/open {clientId,clientSecret,subscriptions}
/// gives {endpoint: ws://ADDR/connect, ticket}; GET /connect?ticket= is the WebSocket, which
/// carries an EVENT for every address-book change (API or console) once a ticket was issued.
/// Admin: GET /_sim/apps/KEY/stream (counters); POST /_sim/apps/KEY/stream/refuse {refused};
/// POST /_sim/apps/KEY/stream/{drop,disconnect,zombie}; POST /_sim/apps/KEY/stream/duplicate
/// {count}.
///
/// The first line printed is the bound address, e.g. 127.0.0.1:41234.
#[derive(Debug, Parser)]
#[command(name = "dingtalk-sim", version, about, long_about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// An app as APPKEY:APPSECRET:AGENT_ID; repeat for several orgs.
    #[arg(long = "app", value_name = "APPKEY:APPSECRET:AGENT_ID")]
    apps: Vec<String>,
    /// Calls per second allowed per app per API path.
    #[arg(long, default_value_t = 20)]
    qps: u32,
    /// Access-token lifetime in seconds.
    #[arg(long, default_value_t = 7200)]
    token_ttl: u64,
    /// Seed for probabilistic faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stream: an event not acked within this many milliseconds is redelivered.
    #[arg(long, default_value_t = 5000)]
    stream_ack_timeout_ms: u64,
    /// Stream: milliseconds before a redelivery (after LATER, a failure, a timeout).
    #[arg(long, default_value_t = 1000)]
    stream_redeliver_delay_ms: u64,
    /// Stream: milliseconds between SYSTEM pings on each connection.
    #[arg(long, default_value_t = 30_000)]
    stream_ping_interval_ms: u64,
    /// Stream: milliseconds between SYSTEM disconnect and closing the socket.
    #[arg(long, default_value_t = 10_000)]
    stream_disconnect_grace_ms: u64,
}

impl Args {
    fn stream_options(&self) -> StreamSimOptions {
        StreamSimOptions {
            ack_timeout: Duration::from_millis(self.stream_ack_timeout_ms),
            redeliver_delay: Duration::from_millis(self.stream_redeliver_delay_ms),
            ping_interval: Duration::from_millis(self.stream_ping_interval_ms.max(1)),
            disconnect_grace: Duration::from_millis(self.stream_disconnect_grace_ms),
            ..StreamSimOptions::default()
        }
    }
}

fn parse_app(text: &str) -> Option<(&str, &str, i64)> {
    let mut parts = text.splitn(3, ':');
    let (key, secret, agent) = (parts.next()?, parts.next()?, parts.next()?);
    Some((key, secret, agent.parse().ok()?)).filter(|(k, s, _)| !k.is_empty() && !s.is_empty())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.qps == 0 {
        eprintln!("dingtalk-sim: --qps must be at least 1");
        return ExitCode::from(64);
    }
    let sim = Simulator::new(SimOptions {
        qps_per_path: args.qps,
        token_ttl: Duration::from_secs(args.token_ttl),
        seed: args.seed,
        stream: args.stream_options(),
    });
    for app in &args.apps {
        let Some((key, secret, agent)) = parse_app(app) else {
            eprintln!("dingtalk-sim: --app {app:?} is not APPKEY:APPSECRET:AGENT_ID");
            return ExitCode::from(64);
        };
        sim.add_app(key, secret, agent);
    }
    let server = match SimServer::start(sim, &args.listen).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("dingtalk-sim: cannot listen on {}: {error}", args.listen);
            return ExitCode::from(69);
        }
    };
    println!("{}", server.addr);
    // Shut down on Ctrl-C / SIGTERM-less environments: wait for Ctrl-C.
    if tokio::signal::ctrl_c().await.is_err() {
        eprintln!("dingtalk-sim: cannot listen for Ctrl-C");
    }
    server.stop().await;
    ExitCode::SUCCESS
}
