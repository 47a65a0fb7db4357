//! instant-acme's HTTP client, made of hubferry's own: the CA is reached with awc through the
//! egress route (`egress.proxy`, `egress.dns`) and with the web's roots plus
//! `tls.acme.ca_file`, like any upstream. instant-acme asks for `Send` futures and awc's are
//! not, so requests cross a channel to a task on the arbiter that owns the client.

use std::{future::Future, pin::Pin, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use tokio::sync::{mpsc, oneshot};

/// An ACME answer is a small JSON document or a certificate chain.
const MAX_RESPONSE: usize = 1024 * 1024;

/// Longest wait for one exchange with the CA, connection included.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

type Reply = Result<BytesResponse, String>;
type Job = (http1::request::Parts, Bytes, oneshot::Sender<Reply>);

#[derive(Clone)]
pub struct AcmeHttp {
    jobs: mpsc::UnboundedSender<Job>,
}

impl AcmeHttp {
    /// Starts, on the current arbiter, the task that sends the requests with `client`.
    pub fn spawn(client: awc::Client) -> AcmeHttp {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        actix_rt::spawn(async move {
            while let Some((parts, body, reply)) = queue.recv().await {
                let client = client.clone();
                actix_rt::spawn(async move {
                    let _ = reply.send(exchange(&client, parts, body).await);
                });
            }
        });
        AcmeHttp { jobs }
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http1::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let jobs = self.jobs.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let (reply, answer) = oneshot::channel();
            jobs.send((parts, body, reply))
                .map_err(|_| failed("the ACME client has stopped".to_owned()))?;
            answer
                .await
                .map_err(|_| failed("the ACME client has stopped".to_owned()))?
                .map_err(failed)
        })
    }
}

fn failed(reason: String) -> instant_acme::Error {
    instant_acme::Error::Other(reason.into())
}

/// One request to the CA, its answer read whole.
async fn exchange(client: &awc::Client, parts: http1::request::Parts, body: Bytes) -> Reply {
    let url = parts.uri.to_string();
    let method = awc::http::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|e| format!("{url}: {e}"))?;
    let mut request = client.request(method, &url).timeout(EXCHANGE_TIMEOUT);
    for (name, value) in &parts.headers {
        request = request.append_header((name.as_str(), value.as_bytes()));
    }
    let mut response = request
        .send_body(body)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let body = response
        .body()
        .limit(MAX_RESPONSE)
        .await
        .map_err(|e| format!("{url}: reading the answer: {e}"))?;
    let mut answer = http1::Response::builder().status(response.status().as_u16());
    for (name, value) in response.headers() {
        answer = answer.header(name.as_str(), value.as_bytes());
    }
    let answer = answer
        .body(Full::new(body))
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(BytesResponse::from(answer))
}
