//! PostgreSQL's form of dingsync's multi-row inserts: one array per column instead of one
//! parameter per value. A pull's `INSERT … VALUES (…), (…)` of 500 users binds 5,000 values;
//! PostgreSQL parsed and bound them one by one for every statement (5.6 s and 9.1 s of the
//! server's time in two logged 100k pulls, as much as the inserting itself). As `INSERT …
//! SELECT … FROM UNNEST($1::text[], …)` the statement has one parameter a column, whatever
//! the number of rows.

/// The same insert as `sql` (`INSERT INTO t (…) VALUES` followed by one row template repeated,
/// its values bound by `?` in `binds`, row after row), as `INSERT INTO t (…) SELECT <the
/// template, each ? a column of v> FROM UNNEST(?::text[], …) AS v(…)`, and its binds regrouped
/// into one array a column. `None` for any other statement, and for one row (it runs as it
/// is).
pub(super) fn unnest_insert(
    sql: &str,
    binds: &[Option<String>],
) -> Option<(String, Vec<Vec<Option<String>>>)> {
    let (head, rows) = sql.split_once(" VALUES ")?;
    if !head.starts_with("INSERT INTO ") || head.contains('?') {
        return None;
    }
    let row = &rows[..=rows.find(')')?];
    let inner = row.strip_prefix('(')?.strip_suffix(')')?;
    let per_row = inner.matches('?').count();
    if per_row == 0 || inner.contains('(') || !binds.len().is_multiple_of(per_row) {
        return None;
    }
    let count = binds.len() / per_row;
    // Every row the same template (and nothing after the rows, no ON CONFLICT).
    if count < 2 || rows != vec![row; count].join(", ") {
        return None;
    }
    let mut column = 0;
    let mut items = Vec::new();
    for item in inner.split(',').map(str::trim) {
        if item == "?" {
            column += 1;
            items.push(format!("v.c{column}"));
        } else if item.contains('?') || item.contains('\'') && item.matches('\'').count() != 2 {
            return None;
        } else {
            items.push(item.to_string());
        }
    }
    let arrays = vec!["?::text[]"; per_row].join(", ");
    let names: Vec<String> = (1..=per_row).map(|c| format!("c{c}")).collect();
    let sql = format!(
        "{head} SELECT {} FROM UNNEST({arrays}) AS v({})",
        items.join(", "),
        names.join(", ")
    );
    let columns = (0..per_row)
        .map(|c| binds.iter().skip(c).step_by(per_row).cloned().collect())
        .collect();
    Some((sql, columns))
}

#[cfg(test)]
mod tests {
    use super::unnest_insert;

    fn some(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some((*v).to_string())).collect()
    }

    #[test]
    fn rows_of_one_template_become_one_array_a_column() {
        let sql = "INSERT INTO t (id, name, kind, at) VALUES (?, ?, 'x', CURRENT_TIMESTAMP), (?, ?, 'x', CURRENT_TIMESTAMP)";
        let mut binds = some(&["1", "a", "2"]);
        binds.push(None);
        let (sql, columns) = unnest_insert(sql, &binds).unwrap();
        assert_eq!(
            sql,
            "INSERT INTO t (id, name, kind, at) SELECT v.c1, v.c2, 'x', CURRENT_TIMESTAMP FROM UNNEST(?::text[], ?::text[]) AS v(c1, c2)"
        );
        assert_eq!(
            columns,
            vec![some(&["1", "2"]), vec![Some("a".to_string()), None]]
        );
    }

    #[test]
    fn anything_else_runs_as_it_is() {
        let one = some(&["1", "a"]);
        for sql in [
            "UPDATE t SET name = ? WHERE id = ?",
            "INSERT INTO t (id, name) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            "INSERT INTO t (id, name) VALUES (?, 'a'), (?, 'b')",
            "INSERT INTO t (id, name) VALUES (?, lower(?))",
            "INSERT INTO t (id, name) VALUES (1, 'a')",
            "INSERT INTO t (id, name) VALUES (?, ?)",
        ] {
            assert!(unnest_insert(sql, &one).is_none(), "{sql}");
        }
        // Binds that are not whole rows.
        assert!(unnest_insert("INSERT INTO t (id, name) VALUES (?, ?)", &some(&["1"])).is_none());
    }
}
