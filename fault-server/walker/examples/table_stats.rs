//! Prints what `RowTable::build` makes of an ELF executable (`cargo run -p rewind-walker --example table_stats -- ELF`).
use walker::host::Executable;
fn main() {
    let p = std::env::args().nth(1).unwrap();
    let exe = Executable::open(std::path::Path::new(&p)).unwrap();
    let image = exe.image(0);
    let t0 = std::time::Instant::now();
    let t = walker::RowTable::build(&image).unwrap();
    println!("{} {:?} heap {} in {:?}", image.index_kind(), t.stats(), t.heap_bytes(), t0.elapsed());
}
