//! `NativeQueue`: creates or opens a queue segment and registers senders and the receiver.

use crate::args::byte_count;
use crate::consumer::NativeConsumer;
use crate::errors::{closed, invalid, IntoNapi, Result};
use crate::producer::NativeProducer;
use napi_derive::napi;
use shmpipe_core::{Backing, Queue, QueueOptions};

/// A handle on a queue segment.
#[napi]
pub struct NativeQueue {
    queue: Option<Queue>,
}

impl NativeQueue {
    fn queue(&self) -> Result<&Queue> {
        self.queue.as_ref().ok_or_else(closed)
    }
}

/// The backing a pipe gets when none is asked for: `'memfd'` on Linux and `'shm'` elsewhere,
/// unless the `SHMPIPE_BACKING` environment variable says otherwise (an unknown value is an
/// error naming it).
#[napi(catch_unwind)]
pub fn default_pipe_backing() -> Result<String> {
    Ok(Backing::for_pipes().napi()?.as_str().to_owned())
}

#[napi]
impl NativeQueue {
    /// Creates a queue: `capacity` messages, `bytes` of inline data area, `maxSenders` slots,
    /// its ring in `backing` (`'shm'` or `'memfd'`; absent: the default for pipes, which the
    /// `SHMPIPE_BACKING` environment variable can set).
    #[napi(factory, catch_unwind)]
    pub fn create(
        capacity: u32,
        bytes: f64,
        max_senders: u32,
        backing: Option<String>,
    ) -> Result<Self> {
        let opts = QueueOptions {
            capacity,
            bytes: byte_count(bytes, "bytes")?,
            max_producers: max_senders,
        };
        let backing = match backing.as_deref() {
            None => Backing::for_pipes().napi()?,
            Some(text) => Backing::parse(text)
                .ok_or_else(|| invalid("backing must be 'shm' or 'memfd'"))?
                .check()
                .napi()?,
        };
        Ok(Self {
            queue: Some(Queue::create_in(&opts, backing).napi()?),
        })
    }

    /// Where the ring's memory lives: `'shm'` or `'memfd'`.
    #[napi(getter, catch_unwind)]
    pub fn backing(&self) -> Result<String> {
        Ok(self.queue()?.backing().as_str().to_owned())
    }

    /// Whether this process holds the receiver role while no receiver has registered (the
    /// unused receiver of a pair); see `Queue::hold_receiver_role`.
    #[napi]
    pub fn hold_receiver_role(&self, held: bool) -> Result<()> {
        self.queue()?.hold_receiver_role(held);
        Ok(())
    }

    /// Opens the queue named `name`.
    #[napi(factory, catch_unwind)]
    pub fn open(name: String) -> Result<Self> {
        Ok(Self {
            queue: Some(Queue::open(&name).napi()?),
        })
    }

    /// The queue's name, to pass to other processes.
    #[napi(getter, catch_unwind)]
    pub fn name(&self) -> Result<String> {
        Ok(self.queue()?.name().to_owned())
    }

    /// Most messages in flight.
    #[napi(getter, catch_unwind)]
    pub fn capacity(&self) -> Result<u32> {
        Ok(self.queue()?.capacity())
    }

    /// Bytes of the inline data area.
    #[napi(getter, catch_unwind)]
    pub fn data_bytes(&self) -> Result<f64> {
        Ok(self.queue()?.data_bytes() as f64)
    }

    /// Largest message stored inline; larger ones travel in a segment of their own.
    #[napi(getter, catch_unwind)]
    pub fn max_inline(&self) -> Result<f64> {
        Ok(self.queue()?.max_inline() as f64)
    }

    /// Messages sent and not yet released.
    #[napi(getter, catch_unwind)]
    pub fn length(&self) -> Result<f64> {
        Ok(self.queue()?.len() as f64)
    }

    /// Registers a sender in this process.
    #[napi(catch_unwind)]
    pub fn producer(&self) -> Result<NativeProducer> {
        let queue = self.queue()?;
        Ok(NativeProducer::new(queue.producer().napi()?, queue.clone()))
    }

    /// Registers the receiver in this process.
    #[napi(catch_unwind)]
    pub fn consumer(&self) -> Result<NativeConsumer> {
        let queue = self.queue()?;
        Ok(NativeConsumer::new(queue.consumer().napi()?, queue.clone()))
    }

    /// Drops this handle. The creating process removes the segment's name once this handle and
    /// every sender and receiver made from it are closed.
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        self.queue = None;
    }
}
