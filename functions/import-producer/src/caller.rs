//! Who is calling: the [`Principal`] that scopes a caller's idempotency keys and owns the imports
//! it creates.
//!
//! Where the principal comes from, first match wins:
//!
//! 1. a [`Principal`] in the request's extensions, put there by a layer in front of the router
//!    (another authorizer, an authenticating proxy, the integration tests); a client cannot set
//!    extensions, only server code can;
//! 2. API Gateway's authorizer context (HTTP API, payload 2.0): the IAM caller's `userArn`, or a
//!    JWT's `iss` and `sub` claims;
//! 3. no request context, or one without an authorizer (a local run, an API deployed without
//!    auth): [`Principal::anonymous`].
//!
//! An authorizer context this code cannot read (a Lambda authorizer, a JWT without `iss` or
//! `sub`, an IAM caller without a well-formed ARN) is refused with `403`: lumping an
//! authenticated caller in with everybody else would let it read their imports.
//! `[To customize]`: a fork with another authorizer maps its identity here, or inserts a
//! [`Principal`] in a layer.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use imports::{InvalidPrincipal, Principal};
use lambda_http::request::RequestContext;

use crate::problem::{self, Problem};

/// The calling principal, as an extractor: a handler that takes it answers `403` to a caller
/// that cannot be identified, before reading anything else of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller(pub(crate) Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        principal(parts).map(Self)
    }
}

/// The principal calling with `parts`, or the `403` problem when an authorizer vouched for a
/// caller this code cannot identify.
fn principal(parts: &Parts) -> Result<Principal, Problem> {
    if let Some(principal) = parts.extensions.get::<Principal>() {
        return Ok(principal.clone());
    }
    let Some(context) = parts.extensions.get::<RequestContext>() else {
        return Ok(Principal::anonymous());
    };
    let RequestContext::ApiGatewayV2(context) = context else {
        return Err(unidentified(
            "the request comes from an event source whose caller this API does not read",
        ));
    };
    let Some(authorizer) = &context.authorizer else {
        return Ok(Principal::anonymous());
    };
    if let Some(arn) = authorizer
        .iam
        .as_ref()
        .and_then(|iam| iam.user_arn.as_deref())
    {
        return Principal::from_arn(arn).map_err(refused);
    }
    if let Some(jwt) = &authorizer.jwt {
        let claim = |name: &str| jwt.claims.get(name).map_or("", String::as_str);
        return Principal::from_jwt(claim("iss"), claim("sub")).map_err(refused);
    }
    Err(unidentified(
        "the request's authorizer names no IAM caller and no JWT this API reads",
    ))
}

fn refused(error: InvalidPrincipal) -> Problem {
    unidentified(&error.to_string())
}

fn unidentified(why: &str) -> Problem {
    tracing::warn!(reason = why, "refused a caller that cannot be identified");
    problem::unidentified_caller()
}
