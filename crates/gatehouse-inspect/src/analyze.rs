//! What each statement of a piece of SQL does, read from PostgreSQL's own parse tree
//! (`pg_query`, which is the server's grammar compiled as a library).
//!
//! Per top-level statement: its command tag, every command it runs (a write hidden in a CTE,
//! the statement under `EXPLAIN ANALYZE` or `PREPARE`), the tables it reads and writes, the
//! functions it calls, whether an `UPDATE`/`DELETE` has no row condition, `COPY ... PROGRAM`,
//! and anything whose effect cannot be seen from the text (a `DO` block, a function that runs
//! SQL given as a string). The walk is over [`Tree`], which holds every field of every node,
//! so nothing nested in an unusual place is skipped.

use crate::sql::StatementKind;
use crate::tree::Tree;
use pg_query::protobuf::{ObjectType, TransactionStmtKind, VariableSetKind};
use serde::Serialize;

/// Functions that run SQL handed to them as text, read tables named in strings, or run SQL on
/// another server: what they touch cannot be seen in the statement, so a statement calling
/// one is opaque.
const RUNS_SQL_TEXT: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "ts_stat",
    "ts_rewrite",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "connectby",
    "crosstab",
    "crosstab2",
    "crosstab3",
    "crosstab4",
    "dblink",
    "dblink_exec",
    "dblink_open",
    "dblink_send_query",
];

/// One top-level statement, analysed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatementInfo {
    /// The command tag of the statement itself (`SELECT`, `DROP TABLE`, `COPY`).
    pub tag: String,
    /// The most consequential thing it runs.
    pub kind: StatementKind,
    /// Every command it runs, its own tag first (a `DELETE` in a CTE, the statement under
    /// `EXPLAIN ANALYZE`); a plain `EXPLAIN` runs only itself.
    pub runs: Vec<String>,
    /// Tables (and views, sequences) it reads, as written: `schema.table` or `table`.
    pub tables_read: Vec<String>,
    /// Tables it changes: rows (INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY FROM) or
    /// definition and privileges (DDL).
    pub tables_written: Vec<String>,
    /// Functions called, as written (`pg_catalog.pg_read_file` or `pg_read_file`).
    pub functions: Vec<String>,
    /// An `UPDATE` or `DELETE` without a row condition (no `WHERE`, or one that names no
    /// column, such as `WHERE true`).
    pub unqualified_write: bool,
    /// `COPY ... TO/FROM PROGRAM`: runs a shell command on the database server.
    pub copy_program: bool,
    /// Why what the statement runs cannot be seen from its text, when it cannot.
    pub opaque: Option<String>,
    /// Prepared statements it runs by name (`EXECUTE name`), as the server folds the name.
    pub executes: Vec<String>,
    /// The prepared statement it creates (`PREPARE name AS ...`).
    pub prepares: Option<String>,
    /// The prepared statement it drops (`DEALLOCATE name`; `Some(None)` for `ALL`).
    pub deallocates: Option<Option<String>>,
    /// The statement's byte range in the text.
    pub span: (usize, usize),
}

impl StatementInfo {
    /// A statement whose text is not available for analysis.
    pub fn opaque(tag: &str, kind: StatementKind, why: impl Into<String>) -> Self {
        StatementInfo {
            tag: tag.to_owned(),
            kind,
            runs: vec![tag.to_owned()],
            opaque: Some(why.into()),
            ..StatementInfo::default()
        }
    }
}

impl StatementInfo {
    /// Takes in what `other` runs, as part of this statement: an `EXECUTE` of a prepared
    /// statement runs that statement's text.
    pub fn absorb(&mut self, other: &StatementInfo) {
        self.kind = self.kind.max(other.kind);
        for (mine, theirs) in [
            (&mut self.runs, &other.runs),
            (&mut self.tables_read, &other.tables_read),
            (&mut self.tables_written, &other.tables_written),
            (&mut self.functions, &other.functions),
        ] {
            for item in theirs {
                if !mine.contains(item) {
                    mine.push(item.clone());
                }
            }
        }
        self.unqualified_write |= other.unqualified_write;
        self.copy_program |= other.copy_program;
        if self.opaque.is_none() {
            self.opaque.clone_from(&other.opaque);
        }
    }
}

/// Whether a nested part of a statement runs now or is only stored or planned (a view's
/// query, a plain `EXPLAIN`, a rule's actions).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Runs,
    Stored,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Read,
    Written,
}

/// Analyses a parse result: one entry per top-level statement, in order.
pub fn analyze(parsed: &pg_query::protobuf::ParseResult, text: &str) -> Vec<StatementInfo> {
    parsed
        .stmts
        .iter()
        .map(|raw| {
            let start = usize::try_from(raw.stmt_location)
                .unwrap_or(0)
                .min(text.len());
            let end = match usize::try_from(raw.stmt_len) {
                Ok(0) | Err(_) => text.len(),
                Ok(len) => start.saturating_add(len).min(text.len()),
            };
            let tree = match &raw.stmt {
                Some(node) => Tree::of(node.as_ref()),
                None => Tree::Null,
            };
            let mut info = StatementInfo {
                tag: tag(&tree),
                kind: StatementKind::Read,
                span: (start, end),
                ..StatementInfo::default()
            };
            info.kind = own_kind(&tree);
            info.runs.push(info.tag.clone());
            let mut walk = Walk { info: &mut info };
            walk.statement(&tree, Mode::Runs, Target::Read, true);
            dedup(&mut info.tables_read);
            dedup(&mut info.tables_written);
            dedup(&mut info.functions);
            info
        })
        .collect()
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

struct Walk<'a> {
    info: &'a mut StatementInfo,
}

impl Walk<'_> {
    /// A statement node (the top-level one, or one nested in a CTE, EXPLAIN, PREPARE).
    fn statement(&mut self, node: &Tree, mode: Mode, target: Target, top: bool) {
        let Tree::Node(name, fields) = node else {
            return self.any(node, mode, target);
        };
        if !top && mode == Mode::Runs && is_statement(name) {
            let tag = tag(node);
            self.info.kind = self.info.kind.max(own_kind(node));
            if !self.info.runs.contains(&tag) {
                self.info.runs.push(tag);
            }
        }
        match *name {
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                if mode == Mode::Runs
                    && matches!(*name, "UpdateStmt" | "DeleteStmt")
                    && !names_a_row(node.field("where_clause"), &target_names(node))
                {
                    self.info.unqualified_write = true;
                }
                for (key, value) in fields {
                    let target = if *key == "relation" {
                        Target::Written
                    } else {
                        Target::Read
                    };
                    self.any(value, mode, target);
                }
            }
            "SelectStmt" => {
                for (key, value) in fields {
                    let target = if *key == "into_clause" {
                        Target::Written
                    } else {
                        Target::Read
                    };
                    self.any(value, mode, target);
                }
            }
            "CopyStmt" => {
                if node.field("is_program").bool() {
                    self.info.copy_program = true;
                }
                let relation = if node.field("is_from").bool() {
                    Target::Written
                } else {
                    Target::Read
                };
                for (key, value) in fields {
                    let target = if *key == "relation" {
                        relation
                    } else {
                        Target::Read
                    };
                    self.any(value, mode, target);
                }
            }
            "ExplainStmt" => {
                let inner = if explain_runs(node) {
                    mode
                } else {
                    Mode::Stored
                };
                self.statement(node.field("query"), inner, Target::Read, false);
                self.any(node.field("options"), mode, Target::Read);
            }
            "PrepareStmt" => {
                // A prepared statement is decided when it is prepared and again, with this
                // text, when it is executed: its body counts as run.
                self.info.prepares = node.field("name").str().map(str::to_owned);
                self.statement(node.field("query"), mode, Target::Read, false);
                self.any(node.field("argtypes"), mode, Target::Read);
            }
            "ExecuteStmt" => {
                if let Some(name) = node.field("name").str() {
                    self.info.executes.push(name.to_owned());
                }
                self.any(node.field("params"), mode, Target::Read);
            }
            "DeallocateStmt" => {
                self.info.deallocates = Some(if node.field("isall").bool() {
                    None
                } else {
                    node.field("name").str().map(str::to_owned)
                });
            }
            "DoStmt" => {
                self.info.opaque = Some("a DO block runs code the gateway does not analyse".into());
            }
            "DeclareCursorStmt" | "CreateTableAsStmt" => {
                for (key, value) in fields {
                    if *key == "query" {
                        self.statement(value, mode, Target::Read, false);
                    } else {
                        self.any(value, mode, Target::Written);
                    }
                }
            }
            "DropStmt" => {
                let on_table = drops_from_a_table(node);
                if drops_relations(node) || on_table {
                    for object in node.field("objects").items() {
                        let mut parts = object.field("items").names();
                        if on_table {
                            // `DROP TRIGGER t ON accounts`: the last name is the trigger's.
                            parts.pop();
                        }
                        if let Some(name) = qualified(&parts) {
                            self.info.tables_written.push(name);
                        }
                    }
                }
                self.any(node.field("objects"), Mode::Stored, Target::Written);
            }
            "CommentStmt" | "SecLabelStmt" => {
                let object = node.field("object");
                let mut parts = object.field("items").names();
                if object_type(node.field("objtype")) == Some(ObjectType::ObjectColumn) {
                    parts.pop();
                }
                if let Some(name) = qualified(&parts) {
                    self.info.tables_written.push(name);
                }
                for (_, value) in fields {
                    self.any(value, mode, Target::Written);
                }
            }
            // Stored definitions: their queries run later, when the object is used.
            "ViewStmt" | "RuleStmt" | "CreateTrigStmt" | "CreateFunctionStmt"
            | "CreatePolicyStmt" | "AlterPolicyStmt" => {
                for (_, value) in fields {
                    self.statement(value, Mode::Stored, Target::Written, false);
                }
            }
            _ if is_statement(name) => {
                let target = if own_kind(node) >= StatementKind::Write {
                    Target::Written
                } else {
                    target
                };
                for (_, value) in fields {
                    self.any(value, mode, target);
                }
            }
            _ => self.any(node, mode, target),
        }
    }

    /// Any node: tables, function calls and nested statements, wherever they are.
    fn any(&mut self, node: &Tree, mode: Mode, target: Target) {
        match node {
            Tree::List(items) => {
                for item in items {
                    self.any(item, mode, target);
                }
            }
            Tree::Node("RangeVar", _) => {
                // A catalog (database) name, if written, is the current database's: dropped.
                let name = [node.field("schemaname"), node.field("relname")]
                    .iter()
                    .filter_map(|f| f.str())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(".");
                match target {
                    Target::Read => self.info.tables_read.push(name),
                    Target::Written => self.info.tables_written.push(name),
                }
            }
            Tree::Node("FuncCall", fields) => {
                let name = qualified(&node.field("funcname").names()).unwrap_or_default();
                let last = name.rsplit('.').next().unwrap_or_default();
                if RUNS_SQL_TEXT.iter().any(|f| f.eq_ignore_ascii_case(last)) {
                    self.info.opaque = Some(format!(
                        "{name}() runs SQL given to it as text, which the gateway does not analyse"
                    ));
                }
                self.info.functions.push(name);
                for (_, value) in fields {
                    self.any(value, mode, Target::Read);
                }
            }
            // A sub-select in an expression reads whatever it names.
            Tree::Node(name, _) if is_statement(name) => {
                self.statement(node, mode, target, false);
            }
            Tree::Node(_, fields) => {
                for (_, value) in fields {
                    self.any(value, mode, target);
                }
            }
            _ => {}
        }
    }
}

fn is_statement(name: &str) -> bool {
    name.ends_with("Stmt")
}

/// Whether an `EXPLAIN` runs its statement: any `ANALYZE` option, whatever its value, counts
/// (`ANALYZE false` is rare, and erring this way only makes a rule see more).
fn explain_runs(node: &Tree) -> bool {
    node.field("options")
        .items()
        .iter()
        .any(|o| o.field("defname").str() == Some("analyze"))
}

/// Whether a row condition names a row of the target at all: a column outside sub-selects,
/// or `CURRENT OF` a cursor. `WHERE true`, `WHERE 1 = 1` and `WHERE EXISTS (SELECT 1)` do not.
/// When the statement joins other tables (`USING`, `FROM`), only a column qualified by the
/// target's name or alias counts: `DELETE FROM a USING b WHERE b.x = 1` deletes every row of
/// `a` (an unqualified column could be either table's, so it does not count there).
fn names_a_row(condition: &Tree, target: &Option<Vec<String>>) -> bool {
    match condition {
        Tree::Node("CurrentOfExpr", _) => true,
        Tree::Node("ColumnRef", _) => match target {
            None => true,
            Some(names) => {
                let parts = condition.field("fields").names();
                parts.len() >= 2
                    && names
                        .iter()
                        .any(|n| n.eq_ignore_ascii_case(parts[parts.len() - 2]))
            }
        },
        Tree::Node("SubLink", fields) => fields
            .iter()
            .filter(|(k, _)| *k != "subselect")
            .any(|(_, v)| names_a_row(v, target)),
        Tree::Node(_, fields) => fields.iter().any(|(_, v)| names_a_row(v, target)),
        Tree::List(items) => items.iter().any(|i| names_a_row(i, target)),
        _ => false,
    }
}

/// For an UPDATE or DELETE that joins other tables, the names its target goes by (alias, or
/// table name); `None` when it names only its target.
fn target_names(node: &Tree) -> Option<Vec<String>> {
    let joined = !node.field("using_clause").is_null() || !node.field("from_clause").is_null();
    if !joined {
        return None;
    }
    let relation = node.field("relation");
    let alias = relation.field("alias").field("aliasname").str();
    Some(match alias {
        Some(alias) if !alias.is_empty() => vec![alias.to_owned()],
        _ => relation
            .field("relname")
            .str()
            .map(|n| vec![n.to_owned()])
            .unwrap_or_default(),
    })
}

/// `schema.name` from a qualified name as written, without a leading catalog (database) part.
fn qualified(parts: &[&str]) -> Option<String> {
    let start = parts.len().saturating_sub(2);
    let name = parts[start..].join(".");
    (!name.is_empty()).then_some(name)
}

/// Objects that belong to a table and are named `object ON table`.
fn drops_from_a_table(node: &Tree) -> bool {
    matches!(
        object_type(node.field("remove_type")),
        Some(ObjectType::ObjectTrigger | ObjectType::ObjectPolicy | ObjectType::ObjectRule)
    )
}

fn drops_relations(node: &Tree) -> bool {
    matches!(
        object_type(node.field("remove_type")),
        Some(
            ObjectType::ObjectTable
                | ObjectType::ObjectView
                | ObjectType::ObjectMatview
                | ObjectType::ObjectForeignTable
                | ObjectType::ObjectSequence
                | ObjectType::ObjectIndex
        )
    )
}

fn object_type(field: &Tree) -> Option<ObjectType> {
    field
        .int()
        .and_then(|i| i32::try_from(i).ok())
        .and_then(|i| ObjectType::try_from(i).ok())
}

/// `OBJECT_FOREIGN_TABLE` → `FOREIGN TABLE`.
fn object_words(field: &Tree) -> Option<String> {
    object_type(field).map(|t| {
        t.as_str_name()
            .trim_start_matches("OBJECT_")
            .replace('_', " ")
    })
}

/// The command tag of a statement node, in the server's words where they differ from the
/// node's name.
pub(crate) fn tag(node: &Tree) -> String {
    let Some(name) = node.name() else {
        return "UNKNOWN".into();
    };
    let with_object = |verb: &str, field: &str| match object_words(node.field(field)) {
        Some(object) => format!("{verb} {object}"),
        None => verb.to_owned(),
    };
    match name {
        "SelectStmt" if !node.field("into_clause").is_null() => "SELECT INTO".into(),
        "DropStmt" => with_object("DROP", "remove_type"),
        "RenameStmt" => with_object("ALTER", "rename_type"),
        "AlterTableStmt" => with_object("ALTER", "objtype"),
        "AlterObjectSchemaStmt" => with_object("ALTER", "object_type"),
        "AlterOwnerStmt" => with_object("ALTER", "object_type"),
        "CommentStmt" => "COMMENT".into(),
        "GrantStmt" | "GrantRoleStmt" => {
            if node.field("is_grant").bool() {
                "GRANT".into()
            } else {
                "REVOKE".into()
            }
        }
        "CreateStmt" => "CREATE TABLE".into(),
        "CreateTableAsStmt" => match object_type(node.field("objtype")) {
            Some(ObjectType::ObjectMatview) => "CREATE MATERIALIZED VIEW".into(),
            _ => "CREATE TABLE AS".into(),
        },
        "IndexStmt" => "CREATE INDEX".into(),
        "ViewStmt" => "CREATE VIEW".into(),
        "CreateFunctionStmt" => {
            if node.field("is_procedure").bool() {
                "CREATE PROCEDURE".into()
            } else {
                "CREATE FUNCTION".into()
            }
        }
        "CreatedbStmt" => "CREATE DATABASE".into(),
        "DropdbStmt" => "DROP DATABASE".into(),
        "CreateTrigStmt" => "CREATE TRIGGER".into(),
        "RuleStmt" => "CREATE RULE".into(),
        "CreateSeqStmt" => "CREATE SEQUENCE".into(),
        "CreateSchemaStmt" => "CREATE SCHEMA".into(),
        "CreateExtensionStmt" => "CREATE EXTENSION".into(),
        "VariableSetStmt" => set_tag(node),
        "VariableShowStmt" => "SHOW".into(),
        "DeclareCursorStmt" => "DECLARE CURSOR".into(),
        "TransactionStmt" => transaction_tag(node),
        "ClusterStmt" => "CLUSTER".into(),
        "CheckPointStmt" => "CHECKPOINT".into(),
        "CopyStmt" => "COPY".into(),
        "DoStmt" => "DO".into(),
        _ => words(name.strip_suffix("Stmt").unwrap_or(name)),
    }
}

/// `SET ROLE` and `SET SESSION AUTHORIZATION` are told apart from other settings: they change
/// who the server thinks is running the session.
fn set_tag(node: &Tree) -> String {
    let kind = node
        .field("kind")
        .int()
        .and_then(|i| i32::try_from(i).ok())
        .and_then(|i| VariableSetKind::try_from(i).ok());
    if matches!(
        kind,
        Some(VariableSetKind::VarReset | VariableSetKind::VarResetAll)
    ) {
        return "RESET".into();
    }
    match node.field("name").str() {
        Some("role") => "SET ROLE".into(),
        Some("session_authorization") => "SET SESSION AUTHORIZATION".into(),
        _ => "SET".into(),
    }
}

fn transaction_tag(node: &Tree) -> String {
    let kind = node
        .field("kind")
        .int()
        .and_then(|i| i32::try_from(i).ok())
        .and_then(|i| TransactionStmtKind::try_from(i).ok());
    match kind {
        Some(TransactionStmtKind::TransStmtBegin) => "BEGIN",
        Some(TransactionStmtKind::TransStmtStart) => "START TRANSACTION",
        Some(TransactionStmtKind::TransStmtCommit) => "COMMIT",
        Some(TransactionStmtKind::TransStmtRollback) => "ROLLBACK",
        Some(TransactionStmtKind::TransStmtSavepoint) => "SAVEPOINT",
        Some(TransactionStmtKind::TransStmtRelease) => "RELEASE",
        Some(TransactionStmtKind::TransStmtRollbackTo) => "ROLLBACK TO",
        Some(TransactionStmtKind::TransStmtPrepare) => "PREPARE TRANSACTION",
        Some(TransactionStmtKind::TransStmtCommitPrepared) => "COMMIT PREPARED",
        Some(TransactionStmtKind::TransStmtRollbackPrepared) => "ROLLBACK PREPARED",
        _ => "TRANSACTION",
    }
    .into()
}

/// `AlterSystem` → `ALTER SYSTEM`.
fn words(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The kind of a statement node by itself (not counting what it contains).
fn own_kind(node: &Tree) -> StatementKind {
    use StatementKind::*;
    let Some(name) = node.name() else {
        return Unknown;
    };
    match name {
        "SelectStmt" if node.field("into_clause").is_null() => Read,
        "SelectStmt" => Write,
        "VariableShowStmt" | "FetchStmt" | "ExplainStmt" | "DeclareCursorStmt" => Read,
        "CopyStmt" => {
            if node.field("is_from").bool() || node.field("is_program").bool() {
                Write
            } else {
                Read
            }
        }
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" | "TruncateStmt" | "CallStmt"
        | "DoStmt" | "ExecuteStmt" => Write,
        "CreateTableAsStmt"
        | "RefreshMatViewStmt"
        | "AlterSystemStmt"
        | "ReindexStmt"
        | "ClusterStmt"
        | "SecLabelStmt"
        | "ImportForeignSchemaStmt"
        | "CommentStmt"
        | "GrantStmt"
        | "GrantRoleStmt"
        | "ReassignOwnedStmt"
        | "DropOwnedStmt"
        | "RuleStmt"
        | "ViewStmt"
        | "IndexStmt"
        | "RenameStmt"
        | "CreatedbStmt"
        | "DropdbStmt" => Ddl,
        n if n.starts_with("Create") || n.starts_with("Alter") || n.starts_with("Drop") => Ddl,
        _ => Other,
    }
}
