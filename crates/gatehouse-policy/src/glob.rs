//! Name patterns: `*` matches any run of characters (dots included), everything else itself,
//! ASCII case ignored. Enough for subjects (`ci-*`), tables (`audit.*`) and functions
//! (`dblink*`); a real expression is for conditions lists cannot state.

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    // Iterative matcher with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&n[ni]) {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_and_case() {
        assert!(matches("ci-*", "ci-deploy"));
        assert!(matches("*", ""));
        assert!(matches("dblink*", "DBLINK_EXEC"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(!matches("accounts", "accounts2"));
        assert!(matches("*.accounts", "public.accounts"));
        assert!(!matches("ci-*", "xci-deploy"));
    }
}
