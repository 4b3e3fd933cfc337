//! SqliteStore against real files in a temp directory.

use std::sync::Arc;

use gatehouse_store::{NewApiKey, NewSession, SqliteStore, Store, StoreError};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

fn hash(n: u8) -> String {
    format!("{:02x}", n).repeat(32)
}

fn key(name: &str, n: u8) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        groups: vec!["developers".into(), "ci".into()],
        key_hash: hash(n),
        prefix: format!("gh_{n:02}"),
        created_at: datetime!(2025-01-02 03:04:05.123456789 UTC),
    }
}

fn session(id: &str, started_at: OffsetDateTime) -> NewSession {
    NewSession {
        id: id.into(),
        protocol: "postgres".into(),
        connection: "demo".into(),
        subject: "alice".into(),
        actors: vec!["agent:claude".into()],
        source: "127.0.0.1:50000".into(),
        started_at,
    }
}

#[tokio::test]
async fn open_creates_private_file_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/state/state.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.insert_key(key("a", 1)).await.unwrap();
    store.close().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    for _ in 0..2 {
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.count_keys().await.unwrap(), 1);
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn concurrent_opens_of_a_fresh_file_all_succeed() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let (a, b, c) = tokio::join!(
            SqliteStore::open(&path),
            SqliteStore::open(&path),
            SqliteStore::open(&path)
        );
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        a.insert_key(key("a", 1)).await.unwrap();
        assert_eq!(b.count_keys().await.unwrap(), 1);
        assert_eq!(c.count_keys().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn key_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("s.db")).await.unwrap());

    assert_eq!(store.count_keys().await.unwrap(), 0);
    assert!(store.key_by_hash(&hash(1)).await.unwrap().is_none());

    store.insert_key(key("ci-deploy", 1)).await.unwrap();
    store.insert_key(key("backup", 2)).await.unwrap();
    assert_eq!(store.count_keys().await.unwrap(), 2);

    let found = store.key_by_hash(&hash(1)).await.unwrap().unwrap();
    assert_eq!(found.name, "ci-deploy");
    assert_eq!(found.groups, vec!["developers", "ci"]);
    assert_eq!(found.prefix, "gh_01");
    assert_eq!(
        found.created_at,
        datetime!(2025-01-02 03:04:05.123456789 UTC)
    );
    assert!(!found.is_revoked());

    let names: Vec<_> = store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, vec!["backup", "ci-deploy"]);
}

#[tokio::test]
async fn duplicate_name_or_hash_conflicts() {
    let store = SqliteStore::in_memory().await.unwrap();
    store.insert_key(key("ci", 1)).await.unwrap();
    let err = store.insert_key(key("ci", 2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(err.to_string(), "API key \"ci\" already exists");
    let err = store.insert_key(key("other", 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.count_keys().await.unwrap(), 1);
}

#[tokio::test]
async fn malformed_hash_or_empty_name_is_invalid() {
    let store = SqliteStore::in_memory().await.unwrap();
    let mut k = key("ci", 0xab);
    k.key_hash = k.key_hash.to_uppercase();
    assert!(matches!(
        store.insert_key(k).await,
        Err(StoreError::Invalid(_))
    ));
    let mut k = key("ci", 1);
    k.key_hash.pop();
    assert!(matches!(
        store.insert_key(k).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.insert_key(key("", 1)).await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn revoke_keeps_first_time_and_unknown_is_none() {
    let store = SqliteStore::in_memory().await.unwrap();
    store.insert_key(key("ci", 1)).await.unwrap();
    let first = datetime!(2025-03-01 10:00 UTC);

    let revoked = store.revoke_key("ci", first).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(first));
    let again = store
        .revoke_key("ci", first + Duration::hours(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(first));

    let by_hash = store.key_by_hash(&hash(1)).await.unwrap().unwrap();
    assert!(by_hash.is_revoked());
    assert!(store.revoke_key("nope", first).await.unwrap().is_none());
    // Revoked keys still count: the bootstrap key must not come back.
    assert_eq!(store.count_keys().await.unwrap(), 1);
}

#[tokio::test]
async fn session_insert_finish_list() {
    let store = SqliteStore::in_memory().await.unwrap();
    let t0 = datetime!(2025-05-05 12:00 UTC);
    for (i, id) in ["s1", "s2", "s3"].iter().enumerate() {
        store
            .insert_session(session(id, t0 + Duration::seconds(i as i64)))
            .await
            .unwrap();
    }
    let err = store.insert_session(session("s1", t0)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let open = store.session("s2").await.unwrap().unwrap();
    assert_eq!(open.ended_at, None);
    assert_eq!(open.statements, 0);
    assert_eq!(open.actors, vec!["agent:claude"]);

    let end = t0 + Duration::minutes(5);
    assert!(store
        .finish_session("s2", end, 42, "client closed")
        .await
        .unwrap());
    assert!(!store
        .finish_session("s2", end + Duration::minutes(1), 1, "again")
        .await
        .unwrap());
    assert!(!store.finish_session("missing", end, 0, "x").await.unwrap());

    let done = store.session("s2").await.unwrap().unwrap();
    assert_eq!(done.ended_at, Some(end));
    assert_eq!(done.statements, 42);
    assert_eq!(done.end_reason.as_deref(), Some("client closed"));
    assert!(store.session("missing").await.unwrap().is_none());

    let ids: Vec<_> = store
        .list_sessions(10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec!["s3", "s2", "s1"]);
    assert_eq!(store.list_sessions(2).await.unwrap().len(), 2);
    assert!(store.list_sessions(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    SqliteStore::open(&path).await.unwrap().close().await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err:?}"
    );
}
