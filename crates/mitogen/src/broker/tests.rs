//! The broker's own tests: deferred work, timers, parked descriptors.

use super::*;

#[test]
fn defer_sync_runs_on_broker_thread() {
    let b = Broker::new().unwrap();
    let b2 = b.clone();
    assert!(b.defer_sync(move || b2.on_broker_thread()).unwrap());
    assert!(!b.on_broker_thread());
    b.shutdown();
    b.join();
    assert!(b.is_stopped());
    assert!(b.defer_sync(|| 1).is_err());
}

#[test]
fn timers_fire_in_order() {
    let b = Broker::new().unwrap();
    let out = Latch::new();
    let o = out.clone();
    b.defer_loop(Box::new(move |lp| {
        let o1 = o.clone();
        lp.after(
            Duration::from_millis(30),
            Box::new(move |_| {
                let _ = o1.put(2);
            }),
        );
        lp.after(
            Duration::from_millis(10),
            Box::new(move |_| {
                let _ = o.put(1);
            }),
        );
    }));
    let t = Some(Duration::from_secs(5));
    assert_eq!(out.get(t).unwrap(), 1);
    assert_eq!(out.get(t).unwrap(), 2);
    b.shutdown();
    b.join();
}

#[test]
fn panicking_task_does_not_kill_broker() {
    let b = Broker::new().unwrap();
    b.defer(|| panic!("boom")).unwrap();
    assert_eq!(b.defer_sync(|| 7).unwrap(), 7);
    b.shutdown();
    b.join();
}

#[test]
fn defer_sync_of_a_panicking_task_returns_its_panic() {
    let b = Broker::new().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let b2 = b.clone();
    std::thread::spawn(move || {
        let _ = tx.send(b2.defer_sync(|| -> u32 { panic!("kaboom") }));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("defer_sync returned");
    match got {
        Err(Error::Call(e)) => assert!(e.to_string().contains("kaboom"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.defer_sync(|| 8).unwrap(), 8);
    b.shutdown();
    b.join();
}

#[test]
fn cancelled_timers_do_not_accumulate() {
    let b = Broker::new().unwrap();
    for _ in 0..1000 {
        let t = b.call_later(Duration::from_secs(3600), || ()).unwrap();
        assert!(t.cancel());
    }
    let (live, heap) = b
        .defer_sync(|| ())
        .and_then(|()| {
            let (tx, rx) = std::sync::mpsc::channel();
            b.defer_loop(Box::new(move |lp| {
                let _ = tx.send((lp.timer_tasks.len(), lp.timers.len()));
            }));
            rx.recv_timeout(Duration::from_secs(5))
                .map_err(|e| StreamError::new(e.to_string()).into())
        })
        .unwrap();
    assert_eq!(live, 0);
    assert!(heap <= 64, "{heap} heap entries left");
    b.shutdown();
    b.join();
}

#[test]
fn defer_after_shutdown_is_refused() {
    let b = Broker::new().unwrap();
    b.shutdown();
    assert!(b.defer(|| ()).is_err());
    b.join();
    assert!(b.defer(|| ()).is_err());
}

/// How many times thread `tid` of this process has gone to sleep.
fn sleeps(tid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// A parked descriptor (a link a direct reader holds) does not wake the
/// broker when data arrives on it. `PRIORITY` looked parked but was not:
/// a Unix socket wakes its waiters with `EPOLLPRI` in the readable key,
/// so each message woke the broker, for nothing, on the reader's CPU.
#[test]
fn a_parked_socket_does_not_wake_the_broker() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let b = Broker::new().unwrap();
    let (mut peer, mine) = std::os::unix::net::UnixStream::pair().unwrap();
    mine.set_nonblocking(true).unwrap();
    let fd = mine.as_raw_fd();
    let tid = b.defer_sync(|| unsafe { libc::gettid() }).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    b.defer_loop(Box::new(move |lp| {
        let token = lp.register(
            fd,
            Interest::READABLE,
            Box::new(move |_, _| {
                c.fetch_add(1, Ordering::SeqCst);
                true
            }),
        );
        let _ = tx.send(token);
    }));
    let token = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    b.reregister(fd, token, None).unwrap();
    // Let the broker settle into its sleep.
    b.defer_sync(|| ()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let before = sleeps(tid);
    for _ in 0..20 {
        peer.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    let woken = sleeps(tid) - before;
    assert!(
        woken <= 2,
        "the parked broker woke {woken} times for 20 writes"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Given its interest again, it reports what waited meanwhile.
    b.reregister(fd, token, Some(Interest::READABLE)).unwrap();
    let t = Instant::now();
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "never reported");
        std::thread::sleep(Duration::from_millis(5));
    }
    b.shutdown();
    b.join();
}
