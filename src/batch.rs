//! Batches: padded tensors for a group of tokenised texts, the grouping of many texts into
//! batches under a size and token budget, and the dynamic batching worker: a bounded queue
//! drained by one inference thread that forms batches by size, tokens and wait time. No
//! intents, rules or HTTP.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{Device, Result, Tensor};
use tokio::sync::oneshot;

use crate::model::bert::Pass;
use crate::text::Tokens;

/// Pad id of XLM-R style vocabularies.
pub const PAD_ID: u32 = 1;

/// A padded batch, as the encoder takes it: `(input_ids, attention_mask, token_type_ids)`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[b, s]` u32 token ids.
    pub input_ids: Tensor,
    /// `[b, s]` u32, 1 for tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// `[b, s]` u32 token-type ids.
    pub token_type_ids: Tensor,
}

impl Batch {
    /// Pads `items` to the longest and builds the tensors on `device`.
    pub fn new(items: &[&Tokens], device: &Device) -> Result<Self> {
        let len = items.iter().map(|t| t.ids.len()).max().unwrap_or(0).max(1);
        let b = items.len();
        let (mut ids, mut mask, mut types) = (
            vec![PAD_ID; b * len],
            vec![0u32; b * len],
            vec![0u32; b * len],
        );
        for (row, t) in items.iter().enumerate() {
            let at = row * len;
            ids[at..at + t.ids.len()].copy_from_slice(&t.ids);
            types[at..at + t.type_ids.len()].copy_from_slice(&t.type_ids);
            mask[at..at + t.ids.len()].fill(1);
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (b, len), device)?,
            attention_mask: Tensor::from_vec(mask, (b, len), device)?,
            token_type_ids: Tensor::from_vec(types, (b, len), device)?,
        })
    }
}

/// Limits for grouping texts into batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most texts in one batch.
    pub max_batch: usize,
    /// Most padded tokens (batch size × longest) in one batch.
    pub max_tokens: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_tokens: 4096,
        }
    }
}

impl BatchLimits {
    /// The limits for batches of a pass of kind `pass`: a refined pass holds two products of
    /// each int8 layer at once, so its batches take half the tokens, for the same peak memory.
    pub fn for_pass(self, pass: Pass) -> Self {
        match pass {
            Pass::Refine => Self {
                max_tokens: (self.max_tokens / 2).max(1),
                ..self
            },
            Pass::Train | Pass::Infer => self,
        }
    }
}

/// Groups indices of `items` into batches of similar length (sorted by length, then cut by the
/// limits), so little compute goes to padding. Every index appears exactly once.
pub fn plan(items: &[Tokens], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].ids.len()));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let len = items[i].ids.len();
        let next_longest = longest.max(len);
        let full = current.len() >= limits.max_batch
            || (!current.is_empty() && next_longest * (current.len() + 1) > limits.max_tokens);
        if full {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(len);
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Settings of the batching worker.
#[derive(Debug, Clone, Copy)]
pub struct BatcherConfig {
    /// Size and token limits of one batch.
    pub limits: BatchLimits,
    /// How long the first request of a batch waits for company.
    pub max_wait: Duration,
    /// Requests that may wait in the queue; beyond that, `submit` fails at once.
    pub queue_capacity: usize,
}

impl Default for BatcherConfig {
    /// Suits a 2-core CPU: batches of up to 32, 5 ms wait, 256 queued requests.
    fn default() -> Self {
        Self {
            limits: BatchLimits::default(),
            max_wait: Duration::from_millis(5),
            queue_capacity: 256,
        }
    }
}

/// Why a request got no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// The queue is full (callers answer 429 and ask to retry).
    #[error("the inference queue is full ({capacity} requests waiting)")]
    QueueFull {
        /// Queue capacity.
        capacity: usize,
    },
    /// The worker has stopped.
    #[error("the inference worker has stopped")]
    Stopped,
    /// Inference failed for the batch.
    #[error("inference failed: {0}")]
    Inference(String),
}

/// One text's output and where its time went.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The output vector (an embedding).
    pub values: Vec<f32>,
    /// From queueing to the start of its batch.
    pub queued: Duration,
    /// The batch's inference time.
    pub inference: Duration,
}

/// What the worker answers for one request.
pub type Scores = std::result::Result<Scored, BatchError>;

struct Job {
    tokens: Tokens,
    pass: Pass,
    enqueued: Instant,
    reply: oneshot::Sender<Scores>,
}

/// A cloneable handle to the batching worker thread (an actor: the thread owns the model).
#[derive(Clone)]
pub struct Batcher {
    tx: SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    capacity: usize,
}

impl Batcher {
    /// Starts the worker thread. `infer` scores one padded group of texts, all queued for the
    /// same kind of pass, and returns one vector per text, in order; it runs on the worker
    /// thread only, never on async workers.
    pub fn start<F>(cfg: BatcherConfig, infer: F) -> Self
    where
        F: FnMut(&[&Tokens], Pass) -> std::result::Result<Vec<Vec<f32>>, String> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(cfg.queue_capacity.max(1));
        let depth = Arc::new(AtomicUsize::new(0));
        let worker_depth = Arc::clone(&depth);
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || worker(rx, cfg, worker_depth, infer))
            .expect("spawning the inference thread. This is a bug.");
        Self {
            tx,
            depth,
            capacity: cfg.queue_capacity.max(1),
        }
    }

    /// Queues one text for a pass of kind `pass` (texts of different kinds never share a
    /// batch); fails at once when the queue is full. Await the receiver for the scores.
    pub fn submit(
        &self,
        tokens: Tokens,
        pass: Pass,
    ) -> std::result::Result<oneshot::Receiver<Scores>, BatchError> {
        let (reply, rx) = oneshot::channel();
        // Count before sending, so the worker never takes off what was not yet added.
        self.depth.fetch_add(1, Ordering::Relaxed);
        let sent = self.tx.try_send(Job {
            tokens,
            pass,
            enqueued: Instant::now(),
            reply,
        });
        if sent.is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(BatchError::QueueFull {
                capacity: self.capacity,
            }),
            Err(TrySendError::Disconnected(_)) => Err(BatchError::Stopped),
        }
    }

    /// Fails at once when the queue has no room for `n` more texts now (so a caller refuses
    /// work before preparing it; `submit` still checks each text).
    pub fn check_room(&self, n: usize) -> std::result::Result<(), BatchError> {
        if self.queue_depth() + n > self.capacity {
            return Err(BatchError::QueueFull {
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Requests waiting in the queue now.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

fn worker<F>(rx: mpsc::Receiver<Job>, cfg: BatcherConfig, depth: Arc<AtomicUsize>, mut infer: F)
where
    F: FnMut(&[&Tokens], Pass) -> std::result::Result<Vec<Vec<f32>>, String>,
{
    // Jobs taken off the channel but not run yet, in arrival order: one that did not fit its
    // batch, and ones for another kind of pass than the batch being gathered.
    let mut held: VecDeque<Job> = VecDeque::new();
    // Waiting for company only pays under concurrency: a lone client would just lose
    // `max_wait` per request. So the first ticket waits only when the previous batch had
    // several (whatever is queued already is always taken).
    let mut busy = false;
    loop {
        let Some(first) = held.pop_front().or_else(|| rx.recv().ok()) else {
            return;
        };
        let deadline = Instant::now() + if busy { cfg.max_wait } else { Duration::ZERO };
        // Held jobs of this pass first (they came earlier), then the channel's until the
        // deadline; jobs of the other pass wait for a batch of their own.
        let mut batch = Gathering::new(first, cfg.limits);
        for job in std::mem::take(&mut held) {
            batch.offer(job);
        }
        while !batch.full {
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(job) => batch.offer(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let Gathering {
            mut jobs, later, ..
        } = batch;
        held = later;
        depth.fetch_sub(jobs.len(), Ordering::Relaxed);
        busy = jobs.len() > 1;
        // A client that went away needs no inference.
        jobs.retain(|j| !j.reply.is_closed());
        // Similar lengths together: a short text padded to a long one wastes compute.
        jobs.sort_by_key(|j| j.tokens.ids.len());
        let lens: Vec<usize> = jobs.iter().map(|j| j.tokens.ids.len()).collect();
        let mut rest = jobs;
        for size in length_groups(&lens).into_iter().rev() {
            let group = rest.split_off(rest.len() - size);
            run_batch(group, &mut infer);
        }
    }
}

/// A batch being gathered: jobs of its first job's pass while they fit its limits.
struct Gathering {
    pass: Pass,
    limits: BatchLimits,
    jobs: Vec<Job>,
    longest: usize,
    /// No more jobs of this pass join: the batch is at its size, or one did not fit (so none
    /// overtakes it).
    full: bool,
    /// Jobs offered but not taken, in order.
    later: VecDeque<Job>,
}

impl Gathering {
    fn new(first: Job, limits: BatchLimits) -> Self {
        let limits = limits.for_pass(first.pass);
        Self {
            pass: first.pass,
            longest: first.tokens.ids.len(),
            full: limits.max_batch <= 1,
            jobs: vec![first],
            limits,
            later: VecDeque::new(),
        }
    }

    /// Takes `job` into the batch if it is of the batch's pass and fits; sets it aside
    /// otherwise.
    fn offer(&mut self, job: Job) {
        let longest = self.longest.max(job.tokens.ids.len());
        if job.pass != self.pass || self.full {
            self.later.push_back(job);
        } else if longest * (self.jobs.len() + 1) <= self.limits.max_tokens {
            self.longest = longest;
            self.jobs.push(job);
            self.full = self.jobs.len() >= self.limits.max_batch;
        } else {
            self.full = true;
            self.later.push_back(job);
        }
    }
}

/// Cuts ascending lengths into runs whose longest is at most twice the shortest plus 8 tokens
/// (so padding stays under about half of a group); returns the run sizes in order.
pub fn length_groups(sorted_lens: &[usize]) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut start = 0;
    for (i, &len) in sorted_lens.iter().enumerate() {
        if len > 2 * sorted_lens[start] + 8 {
            sizes.push(i - start);
            start = i;
        }
    }
    if start < sorted_lens.len() {
        sizes.push(sorted_lens.len() - start);
    }
    sizes
}

fn run_batch<F>(jobs: Vec<Job>, infer: &mut F)
where
    F: FnMut(&[&Tokens], Pass) -> std::result::Result<Vec<Vec<f32>>, String>,
{
    if jobs.is_empty() {
        return;
    }
    let items: Vec<&Tokens> = jobs.iter().map(|j| &j.tokens).collect();
    let start = Instant::now();
    match infer(&items, jobs[0].pass) {
        Ok(scores) if scores.len() == jobs.len() => {
            let inference = start.elapsed();
            for (job, values) in jobs.into_iter().zip(scores) {
                let _ = job.reply.send(Ok(Scored {
                    values,
                    queued: start.saturating_duration_since(job.enqueued),
                    inference,
                }));
            }
        }
        Ok(scores) => {
            let e = BatchError::Inference(format!(
                "{} results for {} texts. This is a bug.",
                scores.len(),
                jobs.len()
            ));
            jobs.into_iter()
                .for_each(|j| drop(j.reply.send(Err(e.clone()))));
        }
        Err(message) => {
            jobs.into_iter()
                .for_each(|j| drop(j.reply.send(Err(BatchError::Inference(message.clone())))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(s: Scores) -> std::result::Result<Vec<f32>, BatchError> {
        s.map(|s| s.values)
    }

    fn toks(n: usize) -> Tokens {
        Tokens {
            ids: vec![5; n],
            type_ids: vec![0; n],
        }
    }

    #[test]
    fn pads_and_masks() {
        let (a, b) = (toks(3), toks(1));
        let batch = Batch::new(&[&a, &b], &Device::Cpu).unwrap();
        let ids: Vec<Vec<u32>> = batch.input_ids.to_vec2().unwrap();
        let mask: Vec<Vec<u32>> = batch.attention_mask.to_vec2().unwrap();
        assert_eq!(ids, vec![vec![5, 5, 5], vec![5, PAD_ID, PAD_ID]]);
        assert_eq!(mask, vec![vec![1, 1, 1], vec![1, 0, 0]]);
    }

    #[test]
    fn plan_respects_limits_and_covers_all() {
        let items: Vec<Tokens> = [10, 3, 50, 7, 7, 2].iter().map(|&n| toks(n)).collect();
        let limits = BatchLimits {
            max_batch: 2,
            max_tokens: 60,
        };
        let plan = plan(&items, limits);
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
        for b in &plan {
            let longest = b.iter().map(|&i| items[i].ids.len()).max().unwrap();
            assert!(b.len() <= 2 && (b.len() == 1 || longest * b.len() <= 60));
        }
    }

    fn lens(items: &[&Tokens], _: Pass) -> std::result::Result<Vec<Vec<f32>>, String> {
        Ok(items.iter().map(|t| vec![t.ids.len() as f32]).collect())
    }

    #[test]
    fn every_request_gets_its_own_result_in_batches() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let cfg = BatcherConfig {
            limits: BatchLimits {
                max_batch: 4,
                max_tokens: 1000,
            },
            max_wait: Duration::from_millis(50),
            queue_capacity: 64,
        };
        let batcher = Batcher::start(cfg, move |items, _| {
            seen.lock().unwrap().push(items.len());
            // Slow enough that the other requests queue up behind the first batch.
            std::thread::sleep(Duration::from_millis(5));
            lens(items, Pass::Infer)
        });
        let rxs: Vec<_> = (1..=10)
            .map(|n| batcher.submit(toks(n), Pass::Infer).unwrap())
            .collect();
        for (n, rx) in (1..=10).zip(rxs) {
            let scored = rx.blocking_recv().unwrap().unwrap();
            assert_eq!(scored.values, vec![n as f32]);
            // Each batch sleeps 5 ms: the time is measured, and the later ones queued.
            assert!(scored.inference >= Duration::from_millis(5), "{scored:?}");
            if n == 10 {
                assert!(scored.queued >= Duration::from_millis(5), "{scored:?}");
            }
        }
        let sizes = sizes.lock().unwrap();
        assert!(
            sizes.iter().all(|&s| s <= 4) && sizes.iter().sum::<usize>() == 10,
            "{sizes:?}"
        );
        assert!(sizes.len() < 10, "requests were batched: {sizes:?}");
    }

    #[test]
    fn a_lone_request_does_not_wait_for_company() {
        let cfg = BatcherConfig {
            limits: BatchLimits::default(),
            max_wait: Duration::from_secs(3600),
            queue_capacity: 8,
        };
        let batcher = Batcher::start(cfg, lens);
        let (tx, rx) = std::sync::mpsc::channel();
        let pending = batcher.submit(toks(3), Pass::Infer).unwrap();
        std::thread::spawn(move || tx.send(values(pending.blocking_recv().unwrap())).unwrap());
        // Without the idle rule this would wait the hour of `max_wait`.
        let got = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(got, Ok(vec![3.0]));
    }

    #[test]
    fn lengths_group_so_padding_stays_small() {
        assert_eq!(length_groups(&[]), Vec::<usize>::new());
        assert_eq!(length_groups(&[5, 9, 18, 19, 60, 200]), vec![3, 1, 1, 1]);
        assert_eq!(length_groups(&[10, 12, 20, 28]), vec![4]);
    }

    #[test]
    fn token_budget_splits_batches() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let cfg = BatcherConfig {
            limits: BatchLimits {
                max_batch: 32,
                max_tokens: 100,
            },
            max_wait: Duration::from_millis(50),
            queue_capacity: 64,
        };
        let batcher = Batcher::start(cfg, move |items, pass| {
            seen.lock().unwrap().push((
                pass,
                items.iter().map(|t| t.ids.len()).max().unwrap() * items.len(),
            ));
            lens(items, pass)
        });
        // Refined passes hold twice the memory per token: half the budget.
        let rxs: Vec<_> = (0..12)
            .map(|i| {
                let pass = if i < 6 { Pass::Infer } else { Pass::Refine };
                batcher.submit(toks(40), pass).unwrap()
            })
            .collect();
        rxs.into_iter()
            .for_each(|rx| assert_eq!(values(rx.blocking_recv().unwrap()), Ok(vec![40.0])));
        let sizes = sizes.lock().unwrap();
        assert!(
            sizes.iter().all(|&(pass, padded)| match pass {
                Pass::Refine => padded <= 50,
                _ => padded <= 100,
            }),
            "{sizes:?}"
        );
        assert!(sizes.contains(&(Pass::Infer, 80)), "{sizes:?}");
    }

    #[test]
    fn full_queue_fails_fast_and_abandoned_requests_are_skipped() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let cfg = BatcherConfig {
            limits: BatchLimits {
                max_batch: 1,
                max_tokens: 1000,
            },
            max_wait: Duration::ZERO,
            queue_capacity: 2,
        };
        let batcher = Batcher::start(cfg, move |items, _| {
            gate_rx.recv().ok();
            counted.fetch_add(items.len(), Ordering::SeqCst);
            lens(items, Pass::Infer)
        });
        let first = batcher.submit(toks(1), Pass::Infer).unwrap();
        // Wait until the worker holds the first request, so the queue is empty.
        while batcher.queue_depth() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let abandoned = batcher.submit(toks(2), Pass::Infer).unwrap();
        let kept = batcher.submit(toks(3), Pass::Infer).unwrap();
        assert_eq!(
            batcher.submit(toks(4), Pass::Infer).unwrap_err(),
            BatchError::QueueFull { capacity: 2 }
        );
        drop(abandoned);
        for _ in 0..3 {
            gate_tx.send(()).unwrap();
        }
        assert_eq!(values(first.blocking_recv().unwrap()), Ok(vec![1.0]));
        assert_eq!(values(kept.blocking_recv().unwrap()), Ok(vec![3.0]));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the abandoned request was not scored"
        );
    }

    #[test]
    fn texts_for_different_passes_never_share_a_batch_nor_split_one_another() {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let cfg = BatcherConfig {
            limits: BatchLimits::default(),
            max_wait: Duration::from_millis(50),
            queue_capacity: 16,
        };
        let batcher = Batcher::start(cfg, move |items, pass| {
            gate_rx.recv().ok();
            record.lock().unwrap().push((items.len(), pass));
            lens(items, pass)
        });
        // The first batch holds the worker while the rest queue up, interleaved.
        let first = batcher.submit(toks(1), Pass::Infer).unwrap();
        while batcher.queue_depth() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let passes = [Pass::Refine, Pass::Refine, Pass::Infer, Pass::Refine];
        let rxs: Vec<_> = passes
            .iter()
            .enumerate()
            .map(|(i, &p)| batcher.submit(toks(i + 2), p).unwrap())
            .collect();
        for _ in 0..5 {
            gate_tx.send(()).unwrap();
        }
        assert_eq!(values(first.blocking_recv().unwrap()), Ok(vec![1.0]));
        for (i, rx) in rxs.into_iter().enumerate() {
            assert_eq!(
                values(rx.blocking_recv().unwrap()),
                Ok(vec![i as f32 + 2.0])
            );
        }
        // The refined texts run together though a first pass came between them.
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(1, Pass::Infer), (3, Pass::Refine), (1, Pass::Infer)]
        );
    }

    #[test]
    fn inference_errors_reach_every_caller() {
        let batcher = Batcher::start(BatcherConfig::default(), |_, _| Err("boom".to_string()));
        let rx = batcher.submit(toks(1), Pass::Infer).unwrap();
        assert_eq!(
            values(rx.blocking_recv().unwrap()),
            Err(BatchError::Inference("boom".into()))
        );
    }
}
