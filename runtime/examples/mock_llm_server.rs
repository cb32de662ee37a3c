//! A mock OpenAI-compatible provider on loopback, for trying the real HTTP client without a
//! key: `cargo run -p tempest-runtime --example mock_llm_server -- 127.0.0.1:8081`, then point
//! `OPENAI_BASE_URL=http://127.0.0.1:8081/v1` at it. It answers every request with the mock's
//! deterministic echo (JSON when JSON is asked for). It never listens beyond the address given,
//! and refuses a non-loopback one.

use std::net::SocketAddr;
use std::process::ExitCode;
use tempest_runtime::llm::mock_server::MockServer;

fn main() -> ExitCode {
    let text = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let address: SocketAddr = match text.parse() {
        Ok(address) => address,
        Err(e) => {
            eprintln!("mock_llm_server: address {text:?} is not HOST:PORT: {e}");
            return ExitCode::from(2);
        }
    };
    if !address.ip().is_loopback() {
        eprintln!("mock_llm_server: refusing {address}: only loopback addresses");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("mock_llm_server: cannot listen on {address}: {e}");
                return ExitCode::from(2);
            }
        };
        eprintln!("mock_llm_server: OPENAI_BASE_URL=http://{address}/v1");
        match axum::serve(listener, MockServer::new().router()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mock_llm_server: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
