//! Columns sized to what they hold, for the tables commands print
//! (`pool status`, `du` over a pool, a build's closing table).

/// A column's name, and whether its cells are numbers (right-aligned).
pub struct Column {
    pub name: &'static str,
    pub numeric: bool,
}

/// A text column.
pub const fn text(name: &'static str) -> Column {
    Column {
        name,
        numeric: false,
    }
}

/// A right-aligned column.
pub const fn number(name: &'static str) -> Column {
    Column {
        name,
        numeric: true,
    }
}

/// Rows under a header, each column as wide as its widest cell.
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: Vec<Column>) -> Table {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    /// A row; a row shorter than the header leaves the rest empty, and its
    /// last cell may run past its column (an error message).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The header and rows, each line ending in a newline, two spaces
    /// between columns, no trailing blanks.
    pub fn render(&self) -> String {
        let width = |c: usize| {
            // A short row's last cell runs on (it is not a column's value).
            let full = |r: &&Vec<String>| r.len() == self.columns.len() || c + 1 < r.len();
            let cells = self.rows.iter().filter(full);
            let widest = cells.map(|r| r[c].chars().count()).max().unwrap_or(0);
            widest.max(self.columns[c].name.len())
        };
        let widths: Vec<usize> = (0..self.columns.len()).map(width).collect();
        let header = self.columns.iter().map(|c| c.name.to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let cells = row.iter().enumerate().map(|(c, cell)| {
                let width = widths.get(c).copied().unwrap_or(0);
                match self.columns.get(c) {
                    Some(col) if col.numeric => format!("{cell:>width$}"),
                    _ if c + 1 == row.len() => cell.clone(),
                    _ => format!("{cell:<width$}"),
                }
            });
            out.push_str(cells.collect::<Vec<_>>().join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_numbers_align_right() {
        let mut t = Table::new(vec![text("NODE"), number("SIZE"), text("NOTE")]);
        t.row(vec!["a-long-name".into(), "5".into(), "x".into()]);
        t.row(vec!["b".into(), "1234".into(), "yz".into()]);
        t.row(vec!["c".into(), "down: no answer within 3s".into()]);
        assert_eq!(
            t.render(),
            "NODE         SIZE  NOTE\n\
             a-long-name     5  x\n\
             b            1234  yz\n\
             c            down: no answer within 3s\n"
        );
    }
}
