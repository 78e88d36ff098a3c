//! The shared bearer token that guards the Coordinator service.

use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` on every request, in constant time.
#[derive(Clone)]
pub struct TokenCheck {
    expected: std::sync::Arc<[u8]>,
}

impl TokenCheck {
    /// A check for `token`.
    pub fn new(token: &str) -> Self {
        Self {
            expected: token.as_bytes().into(),
        }
    }

    /// The interceptor: passes requests with the right token, refuses others.
    /// The scheme is matched without regard to case, as HTTP schemes are
    /// (`Bearer`, `bearer`, `BEARER`).
    #[allow(clippy::result_large_err)]
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(header) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "missing `authorization: Bearer <token>` header",
            ));
        };
        let presented = header.to_str().ok().and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim_start_matches(' '))
        });
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), &self.expected) => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong bearer token")),
            None => Err(Status::unauthenticated(
                "the authorization header must be `Bearer <token>`",
            )),
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Adds the bearer token to outgoing requests (clients and workers).
#[derive(Clone)]
pub struct BearerToken {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl BearerToken {
    /// A token to send; `None` sends no header.
    pub fn new(token: Option<&str>) -> crate::Result<Self> {
        let header = token
            .map(|token| {
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| crate::Error::BadText("the token must be printable ASCII".into()))
            })
            .transpose()?;
        Ok(Self { header })
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = value {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        request
    }

    #[test]
    fn only_the_exact_token_passes() {
        let check = TokenCheck::new("s3cret");
        for good in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
            assert!(check.check(with_header(Some(good))).is_ok(), "{good}");
        }
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret!"),
            Some("s3cret"),
            Some("Bearer "),
            Some("Basic s3cret"),
            Some("Bearers3cret"),
        ] {
            let status = check.check(with_header(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
    }

    #[test]
    fn constant_time_eq_compares_contents() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
