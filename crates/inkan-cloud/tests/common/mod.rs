//! What the cloud test files share: the two stores every scenario runs on.

#![allow(dead_code)]

pub mod world;

/// A store kind.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh database: a SQLite file in `dir`, or a new PostgreSQL database
/// in the throwaway cluster scripts/test.sh starts.
pub async fn db_url(db: Db, dir: &std::path::Path) -> String {
    match db {
        Db::Sqlite => dir
            .join(format!("{}.db", inkan_cloud::store::new_id()))
            .to_str()
            .unwrap()
            .to_string(),
        Db::Postgres => {
            let admin = std::env::var("INKAN_TEST_POSTGRES")
                .expect("INKAN_TEST_POSTGRES is not set: run scripts/test.sh, which starts a throwaway PostgreSQL cluster");
            let name = format!("inkan_{}", inkan_cloud::store::new_id());
            sqlx::any::install_default_drivers();
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                .await
                .unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
        }
    }
}

/// Runs each named scenario `fn name(db: Db)` as two tests, one per store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name(super::Db::Sqlite) })* }
        mod postgres { $(#[test] fn $name() { super::$name(super::Db::Postgres) })* }
    };
}
