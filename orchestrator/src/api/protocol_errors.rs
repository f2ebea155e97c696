//! Errors the HTTP server answers before any route runs, in the API's error shape.
//!
//! hyper refuses a request line whose URI is longer than it parses (64 KiB) with its own
//! `414 URI Too Long` and an empty body, before the router (and so [`super::ApiError`]) ever
//! sees the request. [`ApiListener`] hands hyper connections that replace exactly that response
//! with the same status carrying the API's JSON error body. Everything else passes untouched.

use axum::serve::Listener;
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

/// The start of hyper's own answer to a URI it will not parse.
const HYPER_URI_TOO_LONG: &[u8] = b"HTTP/1.1 414 URI Too Long\r\n";

/// The same answer with the API's error body; the connection closes after it, as hyper's does.
fn uri_too_long() -> Vec<u8> {
    let body = serde_json::to_string(&super::ErrorBody {
        error: super::ErrorDetail {
            code: "uri_too_long".into(),
            message: "the request URI is longer than this server accepts (64 KiB)".into(),
            details: None,
        },
    })
    .expect("an error body serializes");
    format!(
        "HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A TCP listener whose connections answer hyper's protocol-level refusals in the API's error
/// shape. Serve it with `.tap_io(|_| ())` to keep `ConnectInfo<SocketAddr>`.
#[derive(Debug)]
pub struct ApiListener(pub TcpListener);

impl Listener for ApiListener {
    type Io = ApiConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        // No Nagle: a console's output and the agents' frames are small writes in a row, which
        // Nagle would hold until the previous one is acknowledged (~40 ms with delayed ACKs).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(target: "orchestrator::http", error = %e, "cannot set TCP_NODELAY");
        }
        (
            ApiConnection {
                stream,
                replacing: None,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// One accepted connection (see [`ApiListener`]).
#[derive(Debug)]
pub struct ApiConnection {
    stream: TcpStream,
    /// A replacement being written: its bytes, how many went out, and the length of the write
    /// it stands for (reported to hyper once all of it went out).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl AsyncRead for ApiConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ApiConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // hyper's own 414 carries no body; a 414 the API made itself has one and is left alone.
        if this.replacing.is_none()
            && buf.starts_with(HYPER_URI_TOO_LONG)
            && buf
                .windows(b"content-length: 0\r\n".len())
                .any(|w| w.eq_ignore_ascii_case(b"content-length: 0\r\n"))
        {
            this.replacing = Some((uri_too_long(), 0, buf.len()));
        }
        if let Some((bytes, written, stands_for)) = &mut this.replacing {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut this.stream).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            let stands_for = *stands_for;
            this.replacing = None;
            return Poll::Ready(Ok(stands_for));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
