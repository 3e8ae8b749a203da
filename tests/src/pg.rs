//! A PostgreSQL database for one test: created fresh on the server at
//! `SCIMRELAY_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`, the
//! maintenance database) and dropped on drop.

use sqlx::Connection as _;

/// The PostgreSQL server's maintenance database (`SCIMRELAY_TEST_PG_URL` overrides it).
pub fn pg_admin_url() -> String {
    std::env::var("SCIMRELAY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database, dropped (forcibly, connections and all) when this drops.
pub struct TestPg {
    /// Its URL, for `SCIMRELAY_STATUS_DB`.
    pub url: String,
    name: String,
}

impl TestPg {
    /// Creates the database. Panics with instructions when PostgreSQL is not running: a test
    /// that needs it fails loudly, it never skips.
    pub async fn create() -> Self {
        let name = format!("scimrelay_test_{}", uuid::Uuid::new_v4().simple());
        let admin = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL not reachable at {admin} ({e}); start it or set SCIMRELAY_TEST_PG_URL"
            )
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = conn.close().await;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(admin);
        TestPg {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // Drop may run inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
