//! The server binary: reads settings, binds the listener, serves until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Parser;
use groupchat::server::{run, AppState, Config};
use leptos::prelude::get_configuration;
use tokio::net::TcpListener;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // In a cluster every log line says which node wrote it.
    let node = config.redis_url.as_ref().map(|_| config.node_name());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .event_format(WithNode {
            node,
            inner: tracing_subscriber::fmt::format(),
        })
        .init();

    // Leptos' own settings: Cargo.toml's [package.metadata.leptos], overridden by LEPTOS_* variables.
    let leptos = get_configuration(None).context("reading the Leptos configuration")?;
    let addr = leptos.leptos_options.site_addr;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);

    run(
        listener,
        AppState::new(leptos.leptos_options, config)
            .await
            .context("opening the data directory")?,
        shutdown_signal(),
    )
    .await
    .context("serving")?;
    tracing::info!("stopped");
    Ok(())
}

/// The default log line, after `node=<id> ` when there is a node id.
struct WithNode<F> {
    node: Option<String>,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithNode<F>
where
    F: FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if let Some(node) = &self.node {
            write!(writer, "node={node} ")?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// Completes on Ctrl-C or SIGTERM (what `kill` and service managers send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
