//! [`WebSocketClientMock`]: a [`RequestSender`] that records requests instead of sending them, for
//! the unit tests of code that sends requests.
//!
//! Its queries use the server's own matching rule, [`Tags::contains_all`]: `find_by_tags(q)`
//! returns the recorded requests whose tags contain all of `q`.
//!
//! ```
//! use tagcast_client::{RequestSender, WebSocketRequest};
//! use tagcast_client::mock::WebSocketClientMock;
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let mut mock = WebSocketClientMock::new();
//! let first = WebSocketRequest::create("message0").tags([("tag0", "tag0Value")]);
//! let second = WebSocketRequest::create("message1").tags([("tag1", "tag1Value")]);
//! let third = WebSocketRequest::create("message2").tags([("tag0", "tag0Value"), ("tag1", "tag1Value")]);
//! for request in [&first, &second, &third] {
//!     mock.send(request).await.unwrap();
//! }
//! assert_eq!(mock.find_by_tags([("tag0", "tag0Value")]), [&first, &third]);
//! assert_eq!(mock.count(), 3);
//! assert!(mock.contains(&second));
//! mock.reset();
//! assert_eq!(mock.count(), 0);
//! # });
//! ```

use std::future::Future;

use serde_json::Value;

use crate::tags::Tags;
use crate::{ClientError, Defaults, RequestSender, WebSocketRequest};

/// Records the requests sent through it, as [`WebSocketClient`](crate::WebSocketClient)
/// would send them: default tags and metadata merged in, a request without a message refused.
#[derive(Debug, Default)]
pub struct WebSocketClientMock {
    defaults: Defaults,
    requests: Vec<WebSocketRequest>,
}

impl WebSocketClientMock {
    /// A mock with no request recorded and no defaults.
    pub fn new() -> WebSocketClientMock {
        WebSocketClientMock::default()
    }

    /// Sets tags merged into every request recorded, as
    /// [`WebSocketClient::set_default_tags`](crate::WebSocketClient::set_default_tags).
    pub fn set_default_tags<N: Into<String>, V: Into<String>>(
        &mut self,
        tags: impl IntoIterator<Item = (N, V)>,
    ) -> &mut WebSocketClientMock {
        self.defaults.set_tags(tags);
        self
    }

    /// Sets metadata merged into every request recorded, as
    /// [`WebSocketClient::set_default_metadata`](crate::WebSocketClient::set_default_metadata).
    pub fn set_default_metadata<K: Into<String>, V: Into<Value>>(
        &mut self,
        metadata: impl IntoIterator<Item = (K, V)>,
    ) -> &mut WebSocketClientMock {
        self.defaults.set_metadata(metadata);
        self
    }

    /// The recorded requests whose tags contain all of `tags`, in the order they were sent (every
    /// request for no tags).
    pub fn find_by_tags<N: Into<String>, V: Into<String>>(
        &self,
        tags: impl IntoIterator<Item = (N, V)>,
    ) -> Vec<&WebSocketRequest> {
        let query: Tags = tags.into_iter().collect();
        self.requests
            .iter()
            .filter(|request| request.get_tags().contains_all(&query))
            .collect()
    }

    /// True when `request`, with the defaults merged in, was recorded.
    pub fn contains(&self, request: &WebSocketRequest) -> bool {
        self.defaults
            .apply(request)
            .is_ok_and(|request| self.requests.contains(&request))
    }

    /// The number of recorded requests.
    pub fn count(&self) -> usize {
        self.requests.len()
    }

    /// Every recorded request, in the order they were sent.
    pub fn requests(&self) -> &[WebSocketRequest] {
        &self.requests
    }

    /// Forgets every recorded request (the defaults stay).
    pub fn reset(&mut self) {
        self.requests.clear();
    }
}

impl RequestSender for WebSocketClientMock {
    fn send(
        &mut self,
        request: &WebSocketRequest,
    ) -> impl Future<Output = Result<(), ClientError>> + Send {
        let recorded = self.defaults.apply(request).map(|request| {
            self.requests.push(request);
        });
        std::future::ready(recorded)
    }
}
