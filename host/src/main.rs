fn main() {
    let report = smoltalk::lab_checks::run_uppercase_checks().unwrap();
    print!("{}", report.render());
}
