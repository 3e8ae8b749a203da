//! Tests of `ScimClient::execute` and of every auth method against a real HTTP server on
//! 127.0.0.1 (status mapping, headers, Retry-After, timeouts, OAuth caching, renewal and
//! single flight, the JWT assertion).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::*;
use crate::auth::JwtClaims;
use crate::secret::Secret;
use crate::test_support::{json, reply, serve, with_header};

const PRIVATE_KEY: &str = include_str!("../../tests/fixtures/jwt_test_private.pem");
const PUBLIC_KEY: &str = include_str!("../../tests/fixtures/jwt_test_public.pem");

fn client(base: &str, auth: Auth) -> ScimClient {
    ScimClient::new(ClientConfig::new(format!("{base}/scim/v2/"), auth)).expect("valid config")
}

fn http_err(r: Result<ScimResponse, ScimError>) -> ScimError {
    match r {
        Ok(resp) => panic!("expected an error, got HTTP {}", resp.status),
        Err(e) => e,
    }
}

#[tokio::test]
async fn success_statuses_and_bodies() {
    let server = serve(|r| async move {
        match r.path.as_str() {
            "/scim/v2/Users/u1" => json(200, json!({"id": "u1", "userName": "a"})),
            "/scim/v2/Users" => json(201, json!({"id": "u2"})),
            "/scim/v2/Users/u3" => reply(204, None, ""),
            "/scim/v2/Groups/g1" => reply(200, Some("text/plain"), "OK"),
            "/scim/v2/Groups/g2" => reply(200, Some("application/json"), "{not json"),
            "/scim/v2/Groups/g3" => reply(200, Some("text/html"), "<html>Sign in</html>"),
            "/scim/v2/Groups" => json(200, json!({"schemas": ["x"], "id": "not a list"})),
            "/scim/v2/Users/u4" => json(200, json!([1, 2])),
            "/scim/v2/Users/u5" => json(200, json!({"id": "u5\u{0}", "userName": "a"})),
            "/scim/v2/Groups/g5" => json(200, json!({"id": 5, "displayName": "g"})),
            "/scim/v2/moved" => with_header(
                reply(302, None, ""),
                "location",
                "https://sso.example.com/login?session=s3cr3t#frag",
            ),
            _ => reply(200, Some("application/json"), "   "),
        }
    })
    .await;
    let c = client(&server.addr, Auth::None);
    let r = c
        .execute(&ScimRequest::get("/Users/u1"))
        .await
        .expect("200");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, Some(json!({"id": "u1", "userName": "a"})));
    let r = c
        .execute(&ScimRequest::post("/Users", json!({"userName": "b"})))
        .await
        .expect("201");
    assert_eq!((r.status, r.body), (201, Some(json!({"id": "u2"}))));
    let r = c
        .execute(&ScimRequest::delete("/Users/u3"))
        .await
        .expect("204");
    assert_eq!((r.status, r.body), (204, None));
    // A DELETE's body is not read as anything; a PATCH may answer with no body.
    let r = c
        .execute(&ScimRequest::delete("/Groups/g1"))
        .await
        .expect("200 text");
    assert_eq!((r.status, r.body), (200, None));
    let r = c
        .execute(&ScimRequest::patch("/other", json!({})))
        .await
        .expect("blank body");
    assert_eq!(r.body, None);
    // A success that is not what the request needs is an error naming what came instead.
    for (req, needle) in [
        (ScimRequest::get("/other"), "no body where a SCIM resource"),
        (
            ScimRequest::get("/Groups/g2"),
            "not JSON (application/json)",
        ),
        (ScimRequest::get("/Groups/g3"), "not JSON (text/html)"),
        (
            ScimRequest::patch("/Groups/g3", json!({})),
            "not JSON (text/html)",
        ),
        // A gateway's page answering a DELETE: the object was not deleted.
        (
            ScimRequest::delete("/Groups/g3"),
            "an HTML page where a SCIM server answers (text/html)",
        ),
        (ScimRequest::get("/Groups"), "not a SCIM list"),
        (ScimRequest::get("/Users/u4"), "not an object"),
        (
            ScimRequest::get("/Users/u5"),
            "a resource's id holds a control character",
        ),
        (
            ScimRequest::put("/Groups/g5", json!({})),
            "a resource's id is not a string",
        ),
    ] {
        let e = http_err(c.execute(&req).await);
        assert!(matches!(e, ScimError::Unexpected(_)), "{e:?}");
        assert!(e.to_string().contains(needle), "{e}");
        assert!(e.is_transient(), "a gateway may recover: {e}");
    }
    // Redirects are errors naming the status and where, without the query (never followed:
    // the credential must not travel elsewhere).
    let e = http_err(c.execute(&ScimRequest::post("/moved", json!({}))).await);
    assert!(
        matches!(&e, ScimError::Redirect { status: 302, location } if location == "https://sso.example.com/login"),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("HTTP 302") && !text.contains("s3cr3t"),
        "{text}"
    );
    assert!(e.is_auth_failure(), "a login page behind a gateway");
    assert_eq!(server.count("/scim/v2/moved"), 1);
}

/// Bodies over the limit are refused, announced or streamed; token responses too.
#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let big = "x".repeat(4096);
    let server = serve(move |r| {
        let big = big.clone();
        async move {
            match r.path.as_str() {
                "/scim/v2/Users/big" => json(200, json!({"id": "u", "pad": big})),
                "/oauth2/token" => json(200, json!({"access_token": "t", "pad": big})),
                _ => json(200, json!({"id": "small"})),
            }
        }
    })
    .await;
    let limited = |auth: Auth| {
        ScimClient::new(ClientConfig {
            max_body_bytes: 2048,
            ..ClientConfig::new(format!("{}/scim/v2", server.addr), auth)
        })
        .expect("client")
    };
    let c = limited(Auth::None);
    c.execute(&ScimRequest::get("/Users/small"))
        .await
        .expect("small");
    let e = http_err(c.execute(&ScimRequest::get("/Users/big")).await);
    assert!(matches!(e, ScimError::TooLarge { limit: 2048 }), "{e:?}");
    assert!(e.to_string().contains("max_response_bytes"), "{e}");
    let oauth = limited(Auth::OauthClientCredentials {
        token_url: format!("{}/oauth2/token", server.addr),
        client_id: "cid".into(),
        client_secret: Secret::new("s"),
        scope: None,
    });
    let e = http_err(oauth.execute(&ScimRequest::get("/Users/small")).await);
    assert!(matches!(e, ScimError::TooLarge { .. }), "{e:?}");
}

#[tokio::test]
async fn error_statuses_are_parsed_from_every_body_shape() {
    let server = serve(|r| async move {
        match r.path.as_str() {
            "/scim/v2/sf" => json(409, json!({
                "schemas": "[\"urn:ietf:params:scim:api:messages:2.0:Error\"]",
                "detail": "REQUIRED_FIELD_MISSING:user_must_have_one_entitlement_which_must_be_a_profileid;",
                "status": 409})),
            "/scim/v2/aws" => json(409, json!({
                "schema": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "detail": "Refused to create a new, duplicate resource.", "status": "409"})),
            "/scim/v2/rfc" => json(400, json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "scimType": "invalidFilter", "detail": "bad filter", "status": "400"})),
            "/scim/v2/sfrest" => reply(404, Some("application/json"),
                r#"[{"errorCode":"NOT_FOUND","message":"Could not find a match for URL"}]"#),
            "/scim/v2/html" => reply(503, Some("text/html"),
                "<html><head><title>503 Service Temporarily Unavailable</title></head></html>"),
            "/scim/v2/501" => reply(501, None, ""),
            _ => reply(404, None, ""),
        }
    })
    .await;
    let c = client(&server.addr, Auth::None);
    let e = http_err(c.execute(&ScimRequest::post("/sf", json!({}))).await);
    assert_eq!(e.status(), Some(409));
    assert_eq!(e.error_code(), Some("REQUIRED_FIELD_MISSING"));
    assert!(!e.is_transient());
    let e = http_err(c.execute(&ScimRequest::post("/aws", json!({}))).await);
    assert_eq!((e.status(), e.scim_type()), (Some(409), None));
    assert_eq!(
        e.detail(),
        Some("Refused to create a new, duplicate resource.")
    );
    let e = http_err(c.execute(&ScimRequest::get("/rfc")).await);
    assert_eq!(
        (e.scim_type(), e.detail()),
        (Some("invalidFilter"), Some("bad filter"))
    );
    let e = http_err(c.execute(&ScimRequest::get("/sfrest")).await);
    assert_eq!((e.status(), e.error_code()), (Some(404), Some("NOT_FOUND")));
    let e = http_err(c.execute(&ScimRequest::get("/html")).await);
    assert_eq!(e.detail(), Some("503 Service Temporarily Unavailable"));
    assert!(e.is_transient());
    let e = http_err(c.execute(&ScimRequest::get("/501")).await);
    assert!(!e.is_transient());
    let e = http_err(c.execute(&ScimRequest::get("/nothing")).await);
    assert_eq!((e.status(), e.detail()), (Some(404), None));
}

#[tokio::test]
async fn retry_after_seconds_and_http_date() {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let server = serve(move |r| {
        let date = date.clone();
        async move {
            match r.path.as_str() {
                "/scim/v2/secs" => with_header(
                    with_header(
                        json(429, json!({"detail": "slow down"})),
                        "retry-after",
                        "7",
                    ),
                    "x-ratelimit-remaining",
                    "0",
                ),
                "/scim/v2/date" => with_header(reply(503, None, ""), "retry-after", &date),
                _ => reply(429, None, ""),
            }
        }
    })
    .await;
    let c = client(&server.addr, Auth::None);
    let e = http_err(c.execute(&ScimRequest::get("/secs")).await);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert!(e.is_transient());
    let remaining = e
        .headers()
        .and_then(|h| h.get("x-ratelimit-remaining"))
        .and_then(|v| v.to_str().ok());
    assert_eq!(remaining, Some("0"));
    let e = http_err(c.execute(&ScimRequest::get("/date")).await);
    let wait = e.retry_after().expect("retry-after from a date");
    assert!(
        wait > Duration::from_secs(110) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
    let e = http_err(c.execute(&ScimRequest::get("/none")).await);
    assert_eq!(e.retry_after(), None);
}

#[tokio::test]
async fn request_headers_basic_bearer_and_content() {
    let server = serve(|_| async { json(200, json!({"totalResults": 0, "Resources": []})) }).await;
    let basic = client(
        &server.addr,
        Auth::Basic {
            username: "user".into(),
            password: Secret::new("pass"),
        },
    );
    basic
        .execute(&ScimRequest::post("/Users", json!({"userName": "x"})).with_if_match("W/\"3\""))
        .await
        .expect("ok");
    let bearer = client(&server.addr, Auth::Bearer(Secret::new("tok-123")));
    bearer
        .execute(&ScimRequest::get("/Users"))
        .await
        .expect("ok");
    let none = client(&server.addr, Auth::None);
    none.execute(&ScimRequest::get("/Users")).await.expect("ok");
    let json_ct = ScimClient::new(ClientConfig {
        content_type: "application/json".into(),
        user_agent: "custom-agent/1".into(),
        ..ClientConfig::new(format!("{}/scim/v2", server.addr), Auth::None)
    })
    .expect("config");
    json_ct
        .execute(&ScimRequest::put("Users/1", json!({})))
        .await
        .expect("ok");

    let reqs = server.requests();
    assert_eq!(reqs[0].header("authorization"), "Basic dXNlcjpwYXNz");
    assert_eq!(reqs[0].header("content-type"), "application/scim+json");
    assert_eq!(reqs[0].header("if-match"), "W/\"3\"");
    assert!(reqs[0].header("accept").contains("application/scim+json"));
    assert!(reqs[0].header("user-agent").starts_with("scimrelay/"));
    assert_eq!(reqs[0].json(), json!({"userName": "x"}));
    assert_eq!(reqs[1].header("authorization"), "Bearer tok-123");
    assert_eq!(reqs[1].header("content-type"), "");
    assert_eq!(reqs[2].header("authorization"), "");
    assert_eq!(reqs[3].header("content-type"), "application/json");
    assert_eq!(reqs[3].header("user-agent"), "custom-agent/1");
    assert_eq!(reqs[3].path, "/scim/v2/Users/1");
}

#[tokio::test]
async fn query_values_are_percent_encoded() {
    let server = serve(|_| async { json(200, json!({"Resources": []})) }).await;
    let c = client(&server.addr, Auth::None);
    let req = ScimRequest::get("/Users")
        .with_query("filter", crate::filter_eq("userName", "a b\"c@x.com"))
        .with_query("cursor", "");
    c.execute(&req).await.expect("ok");
    let q = server.requests()[0].query.clone().expect("query");
    assert_eq!(
        q,
        "filter=userName%20eq%20%22a%20b%5C%22c%40x.com%22&cursor"
    );
    assert_eq!(
        crate::test_support::percent_decode(
            q.trim_start_matches("filter=").trim_end_matches("&cursor")
        ),
        r#"userName eq "a b\"c@x.com""#
    );
}

#[tokio::test]
async fn timeout_is_reported_as_timeout() {
    let server = serve(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        json(200, json!({}))
    })
    .await;
    let c = ScimClient::new(ClientConfig {
        timeout_secs: 1,
        ..ClientConfig::new(format!("{}/scim/v2", server.addr), Auth::None)
    })
    .expect("config");
    let started = std::time::Instant::now();
    let e = http_err(c.execute(&ScimRequest::get("/Users")).await);
    assert!(matches!(e, ScimError::Timeout), "{e:?}");
    assert!(e.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connect_failure_is_connect_without_the_url() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let c = client(&format!("http://{addr}"), Auth::None);
    let e = http_err(
        c.execute(
            &ScimRequest::get("/Users").with_query("filter", "userName eq \"ann@example.com\""),
        )
        .await,
    );
    assert!(matches!(e, ScimError::Connect(_)), "{e:?}");
    assert!(e.is_transient());
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("ann@example.com") && !shown.contains("ann%40"),
        "{shown}"
    );
}

#[tokio::test]
async fn no_secret_or_request_body_in_errors_or_debug() {
    let server = serve(|_| async {
        json(
            400,
            json!({"detail": "bad request", "scimType": "invalidValue"}),
        )
    })
    .await;
    let c = client(&server.addr, Auth::Bearer(Secret::new("SECRET-TOKEN-42")));
    let e = http_err(
        c.execute(&ScimRequest::post(
            "/Users",
            json!({"userName": "ann@example.com", "password": "pw-SECRET"}),
        ))
        .await,
    );
    let shown = format!("{e} | {e:?}");
    for leak in ["SECRET-TOKEN-42", "ann@example.com", "pw-SECRET"] {
        assert!(!shown.contains(leak), "{leak} leaked in {shown}");
    }
    assert!(
        shown.contains("HTTP 400") && shown.contains("bad request"),
        "{shown}"
    );
    let cfg = ClientConfig::new(
        "https://x/scim",
        Auth::OauthClientCredentials {
            token_url: "https://x/token".into(),
            client_id: "cid".into(),
            client_secret: Secret::new("CLIENT-SECRET-7"),
            scope: None,
        },
    );
    let shown = format!("{cfg:?} {:?}", c);
    assert!(
        !shown.contains("CLIENT-SECRET-7") && !shown.contains("SECRET-TOKEN-42"),
        "{shown}"
    );
}

#[tokio::test]
async fn bad_configs_are_config_errors() {
    for base in [
        "",
        "not a url",
        "ftp://x/scim",
        "https://x/scim?x=1",
        "https://u:p@x/scim",
    ] {
        let r = ScimClient::new(ClientConfig::new(base, Auth::None));
        assert!(matches!(r, Err(ScimError::Config(_))), "{base}: {r:?}");
    }
    let r = ScimClient::new(ClientConfig {
        content_type: "bad\nvalue".into(),
        ..ClientConfig::new("https://x/scim", Auth::None)
    });
    assert!(matches!(r, Err(ScimError::Config(_))));
    let c = ScimClient::new(ClientConfig::new("https://x/scim/v2/", Auth::None)).expect("ok");
    assert_eq!(c.base_url(), "https://x/scim/v2");
}

// ----- OAuth 2.0 client credentials -----

/// A token endpoint plus a SCIM endpoint that accepts only the latest token issued, with
/// switches to revoke it, omit `expires_in`, delay or fail token requests.
struct OAuthServer {
    server: crate::test_support::TestServer,
    state: Arc<OAuthState>,
}

#[derive(Default)]
struct OAuthState {
    issued: AtomicU64,
    /// The generation the SCIM endpoint accepts (0 = none: every token is rejected).
    valid: AtomicU64,
    expires_in: AtomicU64,
    token_delay_ms: AtomicU64,
    token_status: AtomicU64,
    /// When set, the SCIM endpoint answers 401 to every token.
    reject_all: std::sync::atomic::AtomicBool,
    scim_hits: AtomicUsize,
}

async fn oauth_server(expires_in: u64) -> OAuthServer {
    let state = Arc::new(OAuthState::default());
    state.expires_in.store(expires_in, Ordering::SeqCst);
    state.token_status.store(200, Ordering::SeqCst);
    let st = state.clone();
    let server = serve(move |r| {
        let st = st.clone();
        async move {
            if r.path == "/oauth2/token" {
                let delay = st.token_delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let status = st.token_status.load(Ordering::SeqCst) as u16;
                if status != 200 {
                    return json(status, json!({"error": "invalid_client", "error_description": "client authentication failed"}));
                }
                let form_ok = r.header("content-type") == "application/x-www-form-urlencoded"
                    && r.form_field("grant_type").as_deref() == Some("client_credentials")
                    && r.form_field("client_id").as_deref() == Some("cid")
                    && r.form_field("client_secret").as_deref() == Some("s3cr3t&=+ x");
                if !form_ok {
                    return json(400, json!({"error": "invalid_request"}));
                }
                let n = st.issued.fetch_add(1, Ordering::SeqCst) + 1;
                st.valid.store(n, Ordering::SeqCst);
                let mut body = json!({"access_token": format!("tok-{n}"), "token_type": "Bearer"});
                let exp = st.expires_in.load(Ordering::SeqCst);
                if exp > 0 {
                    body["expires_in"] = json!(exp);
                }
                return json(200, body);
            }
            st.scim_hits.fetch_add(1, Ordering::SeqCst);
            let expected = format!("Bearer tok-{}", st.valid.load(Ordering::SeqCst));
            if r.header("authorization") == expected && !st.reject_all.load(Ordering::SeqCst) {
                json(200, json!({"ok": true, "totalResults": 0}))
            } else {
                json(401, json!({"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}))
            }
        }
    })
    .await;
    OAuthServer { server, state }
}

impl OAuthServer {
    fn client(&self) -> ScimClient {
        client(
            &self.server.addr,
            Auth::OauthClientCredentials {
                token_url: format!("{}/oauth2/token", self.server.addr),
                client_id: "cid".into(),
                client_secret: Secret::new("s3cr3t&=+ x"),
                scope: None,
            },
        )
    }
    fn token_requests(&self) -> usize {
        self.server.count("/oauth2/token")
    }
    fn revoke(&self) {
        self.state.valid.store(0, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn client_credentials_token_is_cached_across_calls() {
    let s = oauth_server(3600).await;
    let c = s.client();
    for _ in 0..3 {
        c.execute(&ScimRequest::get("/Users"))
            .await
            .expect("authorized");
    }
    c.clone()
        .execute(&ScimRequest::get("/Users"))
        .await
        .expect("clone shares the cache");
    assert_eq!(s.token_requests(), 1);
    assert_eq!(c.token_requests(), 1);
    assert_eq!(s.state.scim_hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn token_without_expires_in_is_renewed_once_on_401_and_the_request_retried() {
    // Salesforce sends no expires_in: a 401 is the only expiry signal.
    let s = oauth_server(0).await;
    let c = s.client();
    c.execute(&ScimRequest::get("/Users"))
        .await
        .expect("first token");
    s.revoke();
    let r = c
        .execute(&ScimRequest::post("/Users", json!({"userName": "x"})))
        .await
        .expect("retried");
    assert_eq!(r.status, 200);
    assert_eq!(s.token_requests(), 2);
    assert_eq!(s.state.scim_hits.load(Ordering::SeqCst), 3);
    // The retried POST carried the same body.
    let posts: Vec<_> = s
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/Users"))
        .collect();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[1].json(), json!({"userName": "x"}));
    assert_eq!(posts[1].header("authorization"), "Bearer tok-2");
}

#[tokio::test]
async fn persistent_401_refreshes_exactly_once_then_fails() {
    let s = oauth_server(3600).await;
    let c = s.client();
    c.execute(&ScimRequest::get("/Users"))
        .await
        .expect("first token");
    s.state.reject_all.store(true, Ordering::SeqCst);
    let e = http_err(c.execute(&ScimRequest::get("/Users")).await);
    assert_eq!(e.status(), Some(401));
    assert!(e.is_auth_failure());
    assert_eq!(e.error_code(), Some("INVALID_SESSION_ID"));
    assert_eq!(s.token_requests(), 2, "one renewal, not a loop");
    assert_eq!(
        s.state.scim_hits.load(Ordering::SeqCst),
        3,
        "first call, then one attempt and one retry"
    );
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let s = oauth_server(3600).await;
    s.state.token_delay_ms.store(200, Ordering::SeqCst);
    let c = s.client();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.execute(&ScimRequest::get("/Users")).await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("authorized");
    }
    assert_eq!(s.token_requests(), 1);
    assert_eq!(s.state.scim_hits.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_burst_of_401s_after_revocation_renews_once() {
    let s = oauth_server(0).await;
    s.state.token_delay_ms.store(100, Ordering::SeqCst);
    let c = s.client();
    c.execute(&ScimRequest::get("/Users"))
        .await
        .expect("first token");
    s.revoke();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.execute(&ScimRequest::get("/Users")).await })
        })
        .collect();
    for call in calls {
        call.await
            .expect("task")
            .expect("retried with the renewed token");
    }
    assert_eq!(s.token_requests(), 2);
}

#[tokio::test]
async fn token_is_renewed_before_it_expires() {
    // expires_in 2 s: renewal is due after 1 s (half the lifetime, below the 60 s margin).
    let s = oauth_server(2).await;
    let c = s.client();
    c.execute(&ScimRequest::get("/Users")).await.expect("ok");
    c.execute(&ScimRequest::get("/Users")).await.expect("ok");
    assert_eq!(s.token_requests(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.execute(&ScimRequest::get("/Users")).await.expect("ok");
    assert_eq!(s.token_requests(), 2, "renewed ahead of expiry");
    assert_eq!(
        s.state.scim_hits.load(Ordering::SeqCst),
        3,
        "no 401 round trip was needed"
    );
}

#[tokio::test]
async fn token_endpoint_refusal_is_a_token_error_without_the_secret() {
    let s = oauth_server(3600).await;
    s.state.token_status.store(401, Ordering::SeqCst);
    let e = http_err(s.client().execute(&ScimRequest::get("/Users")).await);
    assert!(matches!(e, ScimError::Token { status: 401, .. }), "{e:?}");
    assert_eq!(e.error_code(), Some("invalid_client"));
    assert!(e.is_auth_failure());
    assert!(!e.is_transient());
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("client authentication failed"), "{shown}");
    assert_eq!(s.state.scim_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failing_token_endpoint_is_asked_once_per_burst() {
    let s = oauth_server(3600).await;
    s.state.token_status.store(503, Ordering::SeqCst);
    s.state.token_delay_ms.store(150, Ordering::SeqCst);
    let c = s.client();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.execute(&ScimRequest::get("/Users")).await })
        })
        .collect();
    for call in calls {
        let e = http_err(call.await.expect("task"));
        assert!(matches!(e, ScimError::Token { status: 503, .. }), "{e:?}");
        assert!(e.is_transient());
    }
    assert_eq!(s.token_requests(), 1);
    // A later call tries again.
    s.state.token_status.store(200, Ordering::SeqCst);
    s.state.token_delay_ms.store(0, Ordering::SeqCst);
    c.execute(&ScimRequest::get("/Users"))
        .await
        .expect("recovered");
    assert_eq!(s.token_requests(), 2);
}

// ----- OAuth 2.0 JWT bearer -----

#[tokio::test]
async fn jwt_bearer_assertion_verifies_with_the_public_key() {
    let claims_seen: Arc<std::sync::Mutex<Option<JwtClaims>>> = Arc::default();
    let seen = claims_seen.clone();
    let server = serve(move |r| {
        let seen = seen.clone();
        async move {
            if r.path == "/services/oauth2/token" {
                if r.form_field("grant_type").as_deref() != Some(crate::auth::JWT_BEARER_GRANT) {
                    return json(400, json!({"error": "unsupported_grant_type"}));
                }
                let assertion = r.form_field("assertion").unwrap_or_default();
                let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).expect("public key");
                let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                validation.set_audience(&["https://login.salesforce.com"]);
                validation.set_issuer(&["consumer-key"]);
                validation.sub = Some("integration@acme.example".into());
                return match jsonwebtoken::decode::<JwtClaims>(&assertion, &key, &validation) {
                    Ok(data) => {
                        *seen.lock().expect("lock") = Some(data.claims);
                        // Salesforce: no expires_in.
                        json(200, json!({"access_token": "00Dxx!sf-token", "instance_url": "https://acme.my.salesforce.com", "token_type": "Bearer"}))
                    }
                    Err(e) => json(400, json!({"error": "invalid_grant", "error_description": e.to_string()})),
                };
            }
            if r.header("authorization") == "Bearer 00Dxx!sf-token" {
                json(200, json!({"Resources": []}))
            } else {
                json(401, json!([{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}]))
            }
        }
    })
    .await;
    let c = client(
        &server.addr,
        Auth::OauthJwtBearer {
            token_url: format!("{}/services/oauth2/token", server.addr),
            client_id: "consumer-key".into(),
            subject: "integration@acme.example".into(),
            audience: "https://login.salesforce.com".into(),
            private_key_pem: Secret::new(PRIVATE_KEY),
        },
    );
    c.execute(&ScimRequest::get("/Users"))
        .await
        .expect("authorized with the JWT-bearer token");
    c.execute(&ScimRequest::get("/Users"))
        .await
        .expect("cached");
    assert_eq!(server.count("/services/oauth2/token"), 1);
    let claims = claims_seen
        .lock()
        .expect("lock")
        .take()
        .expect("assertion verified");
    assert_eq!(claims.iss, "consumer-key");
    assert_eq!(claims.sub, "integration@acme.example");
    assert_eq!(claims.aud, "https://login.salesforce.com");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        claims.exp > now + 60 && claims.exp <= now + 300,
        "exp {} now {now}",
        claims.exp
    );
}

#[test]
fn jwt_assertion_with_swapped_claims_is_rejected() {
    // The fixture's public key must not verify an assertion whose claims were swapped: a
    // sanity check that the verification in the test above is real.
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(PRIVATE_KEY.as_bytes()).expect("key");
    let sign = |sub: &str| {
        let claims = JwtClaims {
            iss: "a".into(),
            sub: sub.into(),
            aud: "c".into(),
            exp: 4_000_000_000,
        };
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    };
    let (good, other) = (sign("alice"), sign("mallory"));
    let good_parts: Vec<&str> = good.split('.').collect();
    let other_parts: Vec<&str> = other.split('.').collect();
    let tampered = format!("{}.{}.{}", good_parts[0], other_parts[1], good_parts[2]);
    let dk = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).expect("public key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&["c"]);
    assert!(jsonwebtoken::decode::<JwtClaims>(&good, &dk, &v).is_ok());
    assert!(jsonwebtoken::decode::<JwtClaims>(&tampered, &dk, &v).is_err());
}

#[test]
fn jwt_bearer_with_a_bad_key_fails_at_construction() {
    let r = ScimClient::new(ClientConfig::new(
        "https://x/scim",
        Auth::OauthJwtBearer {
            token_url: "https://x/token".into(),
            client_id: "c".into(),
            subject: "s".into(),
            audience: "a".into(),
            private_key_pem: Secret::new(PUBLIC_KEY),
        },
    ));
    let e = match r {
        Err(e) => e,
        Ok(_) => panic!("a public key cannot sign"),
    };
    assert!(matches!(e, ScimError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("private key"), "{e}");
}

#[test]
fn listed_ids_are_checked_too() {
    use super::{Needs, unusable_id};
    let list = json!({"totalResults": 2, "Resources": [{"id": "ok"}, {"id": "x\u{0}"}]});
    assert_eq!(
        unusable_id(&list, Needs::List),
        Some("holds a control character")
    );
    let fine = json!({"totalResults": 1, "Resources": [{"id": "ok"}, {"displayName": "no id"}]});
    assert_eq!(unusable_id(&fine, Needs::List), None);
    // A resource without an id (a service provider config) is not refused here; a create
    // without one is refused by the provider that needs it.
    assert_eq!(unusable_id(&json!({"patch": {}}), Needs::Resource), None);
}
