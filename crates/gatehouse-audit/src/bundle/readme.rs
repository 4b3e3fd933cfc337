//! The bundle's README: what it holds, how to verify it, and where each requirement an
//! examiner checks is answered. Rendered from the manifest alone, so the checker can render it
//! again and refuse a README that says something else.

use std::fmt::Write as _;

use super::Manifest;

/// Requirement, and the records or fields that answer it.
const MAPPING: &[(&str, &str)] = &[
    (
        "PCI DSS 10.2.1 — audit logs are enabled and active",
        "`gateway.start` / `gateway.stop` bracket every run; `seq` has no gaps; signed `audit.checkpoint` records follow at a fixed interval",
    ),
    (
        "PCI DSS 10.2.1.1 — all individual user access to cardholder data",
        "`statement` records (written before the statement reaches the server) with `who.subject`, the delegation chain `who.actors`, `what.connection` and `what.statement`; `statement.result` with rows and outcome",
    ),
    (
        "PCI DSS 10.2.1.2 — all actions by anyone with administrative access",
        "`admin.request`, `key.created`, `key.revoked`, `session.kill`, `approval.*`; every statement is recorded whatever the database role the gateway uses",
    ),
    (
        "PCI DSS 10.2.1.3 — all access to audit logs",
        "`recording.replayed` (a session recording shown through the gateway) and `admin.request`; reading the files on the host is outside the gateway and belongs to the host's own audit (auditd)",
    ),
    (
        "PCI DSS 10.2.1.4 — invalid logical access attempts",
        "`auth.failure` (what the client presented, from where), `auth.failure.summary` (floods), `statement` with `outcome.status` `failure` and `detail.decision` `block`",
    ),
    (
        "PCI DSS 10.2.1.5 — changes to identification and authentication credentials",
        "`key.created`, `key.revoked`, `bootstrap.key`, `audit.key_created`",
    ),
    (
        "PCI DSS 10.2.1.6 — initialising, starting, stopping or pausing the audit logs",
        "`gateway.start`, `gateway.stop`, `gateway.unclean_stop`, `audit.gap` (records refused while the log could not write), `audit.disk_low`, `audit.acknowledged`",
    ),
    (
        "PCI DSS 10.2.1.7 — creation and deletion of system-level objects",
        "`statement` records with `what.classification` `ddl`",
    ),
    (
        "PCI DSS 10.2.2 — user, type, date and time, success or failure, origin, affected resource",
        "`who.subject` with `who.issuer`, `who.method`, `who.actors`; `kind`; `time` (UTC, nanoseconds); `outcome.status`, `outcome.reason`, `outcome.code`; `who.source`; `what.connection`, `what.protocol`, `what.statement`, `what.resource`",
    ),
    (
        "PCI DSS 10.3.1–10.3.4 — logs protected from destruction and unauthorised change",
        "each record's `hash` covers its content and the previous record's hash (`prev`); signed checkpoints commit to every record before them; this bundle's range proof shows its records are exactly the signed log's; copies go to a SIEM as they are written",
    ),
    (
        "PCI DSS 10.5.1 — audit log history retained and available",
        "`time` of the first and last record above; recordings deleted under retention are named with their hashes in `recording.pruned`",
    ),
    (
        "FFIEC IT Examination Handbook, Information Security — accountability, monitoring, protected audit trails",
        "the identity behind every action, including agents acting for a person (`who.actors`); who approved a held statement (`approval.approved`, and `detail.approved_by` on the statement); what data left (`statement.result` rows, masking in `detail.masking`); tamper evidence as for 10.3",
    ),
];

pub(crate) fn render(m: &Manifest) -> String {
    let s = &m.summary;
    let mut out = String::new();
    let _ = writeln!(out, "# Audit evidence bundle\n");
    let _ = writeln!(
        out,
        "{} audit record(s) of the log `{}`: seq {} to {}, from {} to {}.",
        s.records, m.origin, s.first_seq, s.last_seq, s.first_time, s.last_time
    );
    let _ = writeln!(
        out,
        "Asked for: since {}, until {}. Made {}. The records are in the log's Merkle tree of {} records, root `{}`, whose signed checkpoint is `checkpoint.txt`.\n",
        m.since.as_deref().unwrap_or("the start of the log"),
        m.until.as_deref().unwrap_or("the latest signed checkpoint"),
        m.created,
        m.tree.size,
        m.tree.root
    );
    if let Some(w) = &m.witnessed {
        let _ = writeln!(
            out,
            "Witnessed: `witnessed.txt` holds the log's signed tree of {} records (root `{}`) with cosignature lines naming {}; the manifest's consistency proof shows the tree above extends it. A cosignature proves something only once it verifies under the witness's key, obtained from the witness (`--witness-key`).\n",
            w.size,
            w.root,
            w.cosigners.join(", ")
        );
    } else {
        out.push_str("Witnessed: no witness cosignature was recorded for a checkpoint covering these records.\n\n");
    }
    out.push_str(HOW_TO_VERIFY);
    out.push_str("\n## Where each requirement is answered\n\n| requirement | records and fields |\n|---|---|\n");
    for (requirement, answer) in MAPPING {
        let _ = writeln!(out, "| {requirement} | {answer} |");
    }
    out.push_str("\n## The range in figures\n\n| kind | records |\n|---|---|\n");
    for (kind, count) in &s.kinds {
        let _ = writeln!(out, "| `{kind}` | {count} |");
    }
    let _ = writeln!(
        out,
        "\n{} session(s), {} authenticated principal(s), {} record(s) with a failure outcome, {} signed checkpoint(s) inside the range.",
        s.sessions,
        s.principals.len(),
        s.failures,
        s.checkpoints
    );
    if !s.policies.is_empty() {
        out.push_str(
            "\nGuardrail policies in force (by the SHA-256 `statement` records name):\n\n",
        );
        for p in &s.policies {
            let _ = writeln!(
                out,
                "- `{}`: decided {} statement(s); loaded in the range at seq {:?}",
                p.sha256, p.statements, p.loaded
            );
        }
    }
    if !s.recordings.is_empty() {
        out.push_str("\nSession recordings the records vouch for (compare with `sha256sum` of the files):\n\n");
        for r in &s.recordings {
            let _ = writeln!(
                out,
                "- session `{}`: `{}` SHA-256 `{}` (session.end at seq {})",
                r.session, r.file, r.sha256, r.seq
            );
        }
    }
    if !s.acknowledged.is_empty() {
        let _ = writeln!(
            out,
            "\nWARNING: at seq {:?} an operator acknowledged that the log disagreed with its signed checkpoint; read those `audit.acknowledged` records.",
            s.acknowledged
        );
    }
    out.push_str(NOT_PROVEN);
    out
}

const HOW_TO_VERIFY: &str = "## How to verify

Get the log's public key from the operator by a channel you trust (on the gateway host,
`gatehouse audit public-key` prints it). `public-key.txt` is the key this bundle claims; do not
take it from here alone. Then, on any machine:

    gatehouse audit verify-bundle THIS-FILE.tar --pubkey 'KEY'

It checks, with nothing but this file and the key:

1. `checkpoint.txt` is signed by the key (C2SP signed note, Ed25519).
2. Every record in `records.jsonl` has its own correct SHA-256, the `seq` numbers run without a
   gap, and each record's `prev` is the hash of the one before it.
3. The range proof in `manifest.json` rebuilds the signed tree root from these records at their
   positions: they are exactly the log's records of those numbers — none left out, added or
   altered.
4. `proofs/*.json` are inclusion proofs (the first and last records, and the `policy.loaded`
   records the range's statements name) against the same checkpoint;
   `gatehouse audit verify-proof FILE --pubkey KEY` checks each on its own.
5. `records.csv` is exactly the CSV rendering of `records.jsonl`; the summary in
   `manifest.json` and this README are exactly what the records say.
6. If `witnessed.txt` is present: it is signed by the key, the bundle's tree extends it
   (consistency proof in `manifest.json`), and, for each `--witness-key 'WITNESS KEY'` you
   give (obtained from the witness's operator), its C2SP cosignature verifies: that witness saw
   the log at that size, at the time it states, so the records up to there cannot have been
   rewritten later without the witness noticing.

By hand: a record's hash and the leaf hashing (`SHA-256(0x00 || record hash)`, RFC 9162) are
described in the gateway's `docs/audit-events.md` and `docs/audit-checkpoints.md`; the
checkpoint is a standard C2SP `tlog-checkpoint`.

In `records.csv` a statement whose result record falls after the range shows status
`unknown`; `records.jsonl` is the evidence, the CSV a reading aid.
";

const NOT_PROVEN: &str = "
## What this bundle does not prove

- That the key is the gateway's: that comes from how you obtained it.
- Anything about records outside the range, or after the signed tree.
- The contents of session recordings: only their hashes are here.
- That no one read the audit files on the host (see 10.2.1.3 above).
";
