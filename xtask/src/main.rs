mod config;
mod dtb;
mod elf_image;
mod kernel;
#[cfg(test)]
mod testutil;
fn main(){}
