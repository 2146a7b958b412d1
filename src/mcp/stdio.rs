//! The stdio transport of `pas mcp`: lines from stdin are judged ([`super::frame`]) and
//! either answered with a JSON-RPC error at once or handed to the SDK's server through an
//! in-memory pipe; the server's lines and the refusals share one writer to stdout, a line
//! at a time, so they never interleave.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::frame::{self, Frame, MAX_MESSAGE};
use super::Pas;
use crate::error::{Error, Result};
use rmcp::ServiceExt;

/// Size of the in-memory pipes between the framing and the SDK.
const PIPE: usize = 256 * 1024;

/// Reads one line of at most `MAX_MESSAGE` bytes into `line` (without its newline); a
/// longer line is read to its end and dropped, and `true` says so. `None` at the end of
/// input (a last line without a newline is still a line).
async fn next_line<R: AsyncRead + Unpin>(
    input: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut oversized = false;
    let mut read_any = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any.then_some(oversized));
        }
        read_any = true;
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !oversized && line.len() + chunk.len() > MAX_MESSAGE {
            oversized = true;
            line.clear();
        }
        if !oversized {
            line.extend_from_slice(chunk);
        }
        let used = done.unwrap_or(available.len());
        input.consume(used);
        if done.is_some() {
            return Ok(Some(oversized));
        }
    }
}

/// Serves `server` on this process's stdin and stdout until stdin ends and the calls in
/// flight are answered.
pub async fn serve(server: Pas) -> Result<()> {
    let (client_end, server_end) = tokio::io::duplex(PIPE);
    let (server_read, server_write) = tokio::io::split(server_end);
    let (from_server, mut to_server) = {
        let (r, w) = tokio::io::split(client_end);
        (r, w)
    };
    let (out, mut lines) = mpsc::channel::<Vec<u8>>(64);

    // The one writer of stdout.
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(mut line) = lines.recv().await {
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });

    // The server's replies and notifications, a line at a time.
    let replies = out.clone();
    let relay = tokio::spawn(async move {
        let mut from_server = BufReader::new(from_server);
        let mut line = Vec::new();
        while let Ok(Some(_)) = next_line_unbounded(&mut from_server, &mut line).await {
            if replies.send(std::mem::take(&mut line)).await.is_err() {
                break;
            }
        }
    });

    // The client's lines, judged.
    let refusals = out;
    let reader = tokio::spawn(async move {
        let mut stdin = BufReader::new(tokio::io::stdin());
        let mut line = Vec::new();
        loop {
            let oversized = match next_line(&mut stdin, &mut line).await {
                Ok(Some(o)) => o,
                // The end of input, or stdin is unreadable: the client is gone.
                Ok(None) | Err(_) => break,
            };
            match frame::judge(&line, oversized) {
                Frame::Forward => {
                    line.push(b'\n');
                    if to_server.write_all(&line).await.is_err() {
                        break;
                    }
                }
                Frame::Skip => {}
                Frame::Refuse(reply) => {
                    if refusals.send(reply.to_string().into_bytes()).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Closing the pipe ends the server once it has answered what it was asked.
        let _ = to_server.shutdown().await;
    });

    let running = server
        .serve((server_read, server_write))
        .await
        .map_err(|e| Error::failure(format!("the MCP session did not start: {e}")));
    if let Ok(running) = running {
        let _ = running.waiting().await;
    }
    reader.abort();
    let _ = relay.await;
    let _ = writer.await;
    Ok(())
}

/// Reads one line the SDK wrote (trusted, any length) into `line`, without its newline.
async fn next_line_unbounded<R: AsyncRead + Unpin>(
    input: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<()>> {
    line.clear();
    let n = input.read_until(b'\n', line).await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(Some(()))
}
