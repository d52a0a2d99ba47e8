//! Many processes racing for one name through the real binary.

use crate::support::{SqliteStore, history};

#[test]
fn twelve_processes_five_rounds_on_sqlite_never_overlap() {
    let store = SqliteStore::new();
    history::race(&store.url, store.dir.path(), 12, 5);
}
