//! Benchmark data: the texmex `.fvecs`/`.ivecs` formats (each vector: a little-endian i32
//! dimension, then that many f32 or i32), clustered synthetic data, and brute-force ground truth.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

fn read_vecs<T>(path: &Path, parse: impl Fn([u8; 4]) -> T) -> io::Result<Vec<Vec<T>>> {
    let mut r = BufReader::new(File::open(path)?);
    let mut out = Vec::new();
    let mut word = [0u8; 4];
    loop {
        match r.read_exact(&mut word) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let dim = i32::from_le_bytes(word);
        if !(1..=65536).contains(&dim) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: bad dimension {dim} at vector {}",
                    path.display(),
                    out.len()
                ),
            ));
        }
        let mut v = Vec::with_capacity(dim as usize);
        for _ in 0..dim {
            r.read_exact(&mut word)?;
            v.push(parse(word));
        }
        out.push(v);
    }
    Ok(out)
}

pub fn read_fvecs(path: &Path) -> io::Result<Vec<Vec<f32>>> {
    read_vecs(path, f32::from_le_bytes)
}

pub fn read_ivecs(path: &Path) -> io::Result<Vec<Vec<u32>>> {
    read_vecs(path, |w| i32::from_le_bytes(w).max(0) as u32)
}

fn write_vecs<T: Copy>(
    path: &Path,
    rows: &[Vec<T>],
    bytes: impl Fn(T) -> [u8; 4],
) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for row in rows {
        w.write_all(&(row.len() as i32).to_le_bytes())?;
        for x in row {
            w.write_all(&bytes(*x))?;
        }
    }
    w.flush()
}

pub fn write_fvecs(path: &Path, rows: &[Vec<f32>]) -> io::Result<()> {
    write_vecs(path, rows, f32::to_le_bytes)
}

pub fn write_ivecs(path: &Path, rows: &[Vec<u32>]) -> io::Result<()> {
    write_vecs(path, rows, |x| (x as i32).to_le_bytes())
}

/// Deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

/// Base and query vectors from the same clusters: each cluster spreads along `latent` random
/// directions of its own plus a little isotropic noise (low intrinsic dimension, like
/// embeddings).
pub fn clustered(
    n: usize,
    queries: usize,
    dim: usize,
    clusters: usize,
    latent: usize,
    spread: f32,
    seed: u64,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut rng = Rng::new(seed);
    let centres: Vec<(Vec<f32>, Vec<Vec<f32>>)> = (0..clusters)
        .map(|_| {
            let c = (0..dim).map(|_| rng.normal()).collect();
            let basis = (0..latent)
                .map(|_| (0..dim).map(|_| rng.normal() * spread).collect())
                .collect();
            (c, basis)
        })
        .collect();
    let sample = |rng: &mut Rng| -> Vec<f32> {
        let (c, basis) = &centres[(rng.next_u64() % clusters as u64) as usize];
        let mut v: Vec<f32> = c.iter().map(|x| x + 0.05 * spread * rng.normal()).collect();
        for b in basis {
            let z = rng.normal();
            for (x, d) in v.iter_mut().zip(b) {
                *x += z * d;
            }
        }
        v
    };
    let base = (0..n).map(|_| sample(&mut rng)).collect();
    let qs = (0..queries).map(|_| sample(&mut rng)).collect();
    (base, qs)
}

/// Exact top-`k` ids per query (higher `score` first), on every core.
pub fn ground_truth(
    base: &[Vec<f32>],
    queries: &[Vec<f32>],
    k: usize,
    score: fn(&[f32], &[f32]) -> f32,
) -> Vec<Vec<u32>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = queries.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = queries
            .chunks(chunk)
            .map(|qs| {
                s.spawn(move || {
                    qs.iter()
                        .map(|q| {
                            let mut scored: Vec<(f32, u32)> = base
                                .iter()
                                .enumerate()
                                .map(|(i, v)| (score(q, v), i as u32))
                                .collect();
                            let kth = k.min(scored.len());
                            if kth > 0 {
                                scored.select_nth_unstable_by(kth - 1, |a, b| b.0.total_cmp(&a.0));
                            }
                            scored.truncate(kth);
                            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                            scored.into_iter().map(|(_, i)| i).collect()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

pub fn score_cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut d, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        d += x * y;
        na += x * x;
        nb += y * y;
    }
    d / (na.sqrt() * nb.sqrt()).max(f32::MIN_POSITIVE)
}

pub fn score_l2(a: &[f32], b: &[f32]) -> f32 {
    -a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>()
}

pub fn score_dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
