//! `shmpipe ops [NAME]`: every op of `--ops` as the worker runs it, from one catalog
//! (`shmpipe_worker::ops::catalog`), so the list can never disagree with what the parser accepts.

use shmpipe_worker::ops::catalog::{self, OpInfo};

use crate::exit;

/// Prints every op, or the one named; an unknown name is refused with the nearest op.
pub fn ops(name: Option<&str>) -> i32 {
    let Some(name) = name else {
        println!("Ops for `run --ops` and `apply --ops`, applied in the order given:\n");
        for op in catalog::CATALOG
            .iter()
            .filter(|op| !op.dataset_wide && !op.reshapes)
        {
            print!("{}", describe(op));
        }
        println!("Ops that change an image's size (run only: a dataset's images keep theirs):\n");
        for op in catalog::CATALOG.iter().filter(|op| op.reshapes) {
            print!("{}", describe(op));
        }
        println!("Dataset-wide ops (shmpipe apply on a loaded dataset only, one per list):\n");
        for op in catalog::CATALOG.iter().filter(|op| op.dataset_wide) {
            print!("{}", describe(op));
        }
        return exit::OK;
    };
    let wanted = name.split(':').next().unwrap_or(name);
    match catalog::find(name).or_else(|| catalog::find(wanted)) {
        Some(op) => {
            print!("{}", describe(op));
            exit::OK
        }
        None => {
            let hint = catalog::did_you_mean(wanted)
                .map_or(String::new(), |op| format!(": did you mean {op}?"));
            eprintln!("shmpipe: error: no op named {name:?}{hint} (`shmpipe ops` lists them all)");
            exit::USAGE
        }
    }
}

/// One op as a block of text: syntax, parameter, formula, other names, an example.
fn describe(op: &OpInfo) -> String {
    let mut text = format!("  {}\n", op.syntax);
    if !op.parameter.is_empty() {
        text.push_str(&format!("      parameter: {}\n", op.parameter));
    }
    text.push_str(&format!("      computes:  {}\n", op.formula));
    if !op.aliases.is_empty() {
        text.push_str(&format!("      also:      {}\n", op.aliases.join(", ")));
    }
    text.push_str(&format!("      example:   --ops {}\n\n", op.example));
    text
}
