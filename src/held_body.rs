//! A response body that keeps something alive until the body is dropped: a blob download's
//! slots until its last byte is written (or the client leaves), a client's unread payload until
//! the error answer about it is out. Nothing else: it passes the body through untouched.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;

pin_project_lite::pin_project! {
    pub struct HeldBody<B, T> {
        #[pin]
        body: B,
        held: T,
    }
}

impl<B, T> HeldBody<B, T> {
    /// `body`, with `held` dropped only when it is.
    pub fn new(body: B, held: T) -> Self {
        HeldBody { body, held }
    }
}

impl<B: MessageBody, T> MessageBody for HeldBody<B, T> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.project().body.poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[actix_rt::test]
    async fn the_held_value_lives_as_long_as_the_body() {
        let held = Rc::new(());
        let body = HeldBody::new(Bytes::from_static(b"abc"), held.clone());
        assert_eq!(Rc::strong_count(&held), 2);
        assert_eq!(body.size(), BodySize::Sized(3));
        let bytes = actix_web::body::to_bytes(body).await.unwrap();
        assert_eq!(&bytes[..], b"abc");
        assert_eq!(Rc::strong_count(&held), 1);
    }
}
