//! A TCP fault proxy: sits between a client (a pool) and PostgreSQL and injects network
//! faults on command.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use dbmetrics_tests::proxy::{FaultProxy, Mode};
//!
//! let db = dbmetrics_tests::database();
//! let (proxy, config) = FaultProxy::in_front_of(&db.config).await?;
//! let pool = dbmetrics_tests::pool_for(config, 4); // connects through the proxy
//! proxy.set_mode(Mode::Silent).await?;            // new and live connections stall
//! proxy.set_mode(Mode::Refuse).await?;            // the port refuses connections
//! proxy.set_mode(Mode::Pass).await?;              // back to normal
//! proxy.cut_all().await;                          // every live connection is closed
//! # drop(pool); Ok(()) }
//! ```
//!
//! | mode | new connections | live connections |
//! |---|---|---|
//! | [`Mode::Pass`] | accepted and forwarded | forwarded |
//! | [`Mode::Refuse`] | refused: the port is held by a socket that does not listen (the kernel answers RST) | still forwarded |
//! | [`Mode::Silent`] | accepted, never answered, nothing forwarded | stall: bytes are held, not delivered, not lost |
//!
//! Leaving `Silent` releases what was held (a partition that heals); a connection accepted
//! while silent then connects upstream. [`FaultProxy::cut_all`] closes every live connection,
//! both sides, at once. The proxy stops (listener closed, every connection closed, no task
//! left) when the last clone of its handle is dropped.
//!
//! The port stays the proxy's in every mode: while refusing, a bound socket that does not listen
//! keeps it, so no other socket of the machine can take it and receive the pool's connections.
//! [`ClosedPort`] is the same trick on its own: a port where connecting is refused.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// What the proxy does with traffic; see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Close the listening socket: connecting fails with "connection refused".
    Refuse,
    /// Accept and never answer; live connections stall.
    Silent,
}

/// A running proxy. Cheap to clone; stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct FaultProxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: SocketAddr,
    upstream: SocketAddr,
    commands: mpsc::Sender<Command>,
    mode: watch::Receiver<Mode>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    live: AtomicUsize,
}

enum Command {
    SetMode(Mode, oneshot::Sender<io::Result<()>>),
    CutAll(oneshot::Sender<()>),
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream`, in [`Mode::Pass`].
    ///
    /// # Errors
    /// When no local port can be bound.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = port_socket(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?.listen(1024)?;
        let addr = listener.local_addr()?;
        let (commands, command_rx) = mpsc::channel(8);
        let (mode_tx, mode) = watch::channel(Mode::Pass);
        let counters = Arc::new(Counters::default());
        tokio::spawn(accept_loop(
            Some(listener),
            addr,
            upstream,
            command_rx,
            mode_tx,
            counters.clone(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                addr,
                upstream,
                commands,
                mode,
                counters,
            }),
        })
    }

    /// Starts a proxy in front of the server `config` points at, and returns it with a copy of
    /// `config` that connects through the proxy (user, password, database unchanged).
    ///
    /// # Errors
    /// When `config` names no TCP host (a Unix socket cannot be proxied), the host does not
    /// resolve, or no local port can be bound.
    pub async fn in_front_of(
        config: &tokio_postgres::Config,
    ) -> io::Result<(Self, tokio_postgres::Config)> {
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the fault proxy needs a TCP host in the database configuration",
                ));
            }
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "the database host does not resolve",
                )
            })?;
        let proxy = Self::start(upstream).await?;
        let through = redirect(config, proxy.addr());
        Ok((proxy, through))
    }

    /// The proxy's own address (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The address traffic is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.upstream
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.inner.mode.borrow()
    }

    /// Switches mode. On return the change is in effect: after `Refuse` the port refuses,
    /// after leaving it the port accepts again.
    ///
    /// # Errors
    /// When the port cannot be bound again on leaving `Refuse` (another process took it); the
    /// proxy then stays in `Refuse`.
    pub async fn set_mode(&self, mode: Mode) -> io::Result<()> {
        let (ack, done) = oneshot::channel();
        self.send(Command::SetMode(mode, ack)).await?;
        done.await.map_err(|_| stopped())?
    }

    /// Closes every live connection (client and upstream side) at once. On return they are
    /// all closed; connections accepted afterwards are not affected.
    pub async fn cut_all(&self) {
        let (ack, done) = oneshot::channel();
        if self.send(Command::CutAll(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.inner.counters.accepted.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn live(&self) -> usize {
        self.inner.counters.live.load(Ordering::SeqCst)
    }

    async fn send(&self, command: Command) -> io::Result<()> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| stopped())
    }
}

/// `config` with its hosts and ports replaced by `addr` (`Config::host` appends, so copy the
/// rest into a fresh one).
fn redirect(config: &tokio_postgres::Config, addr: SocketAddr) -> tokio_postgres::Config {
    let mut through = tokio_postgres::Config::new();
    through
        .host(addr.ip().to_string())
        .port(addr.port())
        .ssl_mode(config.get_ssl_mode())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding());
    if let Some(user) = config.get_user() {
        through.user(user);
    }
    if let Some(password) = config.get_password() {
        through.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        through.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        through.options(options);
    }
    if let Some(name) = config.get_application_name() {
        through.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        through.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        through.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = config.get_keepalives_interval() {
        through.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        through.keepalives_retries(retries);
    }
    through
}

fn stopped() -> io::Error {
    io::Error::other("the fault proxy task stopped")
}

/// Owns the listener and every connection task; ends (dropping them all) when every handle is
/// gone.
async fn accept_loop(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut commands: mpsc::Receiver<Command>,
    mode: watch::Sender<Mode>,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    let mut reserved: Option<TcpSocket> = None;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::SetMode(new, ack)) => {
                    let result = match (new, listener.take()) {
                        // hold the port with a second socket before closing the listener
                        (Mode::Refuse, Some(open)) => match port_socket(addr) {
                            Ok(socket) => {
                                reserved = Some(socket);
                                Ok(())
                            }
                            Err(e) => {
                                listener = Some(open);
                                Err(e)
                            }
                        },
                        (Mode::Refuse, None) => Ok(()),
                        (_, Some(open)) => {
                            listener = Some(open);
                            Ok(())
                        }
                        (_, None) => match reserved.take().map(|socket| socket.listen(1024)) {
                            Some(Ok(open)) => {
                                listener = Some(open);
                                Ok(())
                            }
                            Some(Err(e)) => Err(e),
                            None => Err(stopped()),
                        },
                    };
                    if result.is_ok() {
                        mode.send_replace(new);
                    }
                    let _ = ack.send(result);
                }
                Some(Command::CutAll(ack)) => {
                    connections.abort_all();
                    while connections.join_next().await.is_some() {}
                    let _ = ack.send(());
                }
            },
            accepted = accept(&listener) => {
                if let Ok((client, _)) = accepted {
                    counters.accepted.fetch_add(1, Ordering::SeqCst);
                    let guard = LiveGuard::new(counters.clone());
                    connections.spawn(serve(client, upstream, mode.subscribe(), guard));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A TCP socket bound to `addr` (not yet listening) that other sockets of this process can
/// share the port with (`SO_REUSEPORT`), so that the port can be handed from a listener to a
/// reserving socket without a gap.
fn port_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// A port on 127.0.0.1 where connecting is refused, reserved while this value lives.
///
/// Binding a listener to port 0 and dropping it leaves a port that the next `bind(0)` of any
/// test may get (and then answer); this holds the port with a socket that is bound but does
/// not listen, so the kernel refuses every connection to it.
#[derive(Debug)]
pub struct ClosedPort {
    /// Holds the port: bound, never listening.
    _socket: TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Reserves a port.
    ///
    /// # Errors
    /// When no local port can be bound.
    pub fn new() -> io::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = socket.local_addr()?;
        Ok(Self {
            _socket: socket,
            addr,
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn accept(listener: &Option<TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Counts a live connection until dropped (also when its task is aborted).
struct LiveGuard(Arc<Counters>);

impl LiveGuard {
    fn new(counters: Arc<Counters>) -> Self {
        counters.live.fetch_add(1, Ordering::SeqCst);
        Self(counters)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    _live: LiveGuard,
) -> io::Result<()> {
    // a connection accepted while silent waits, unanswered, until the proxy speaks again
    wait_audible(&mut mode).await?;
    let server = TcpStream::connect(upstream).await?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::try_join!(
        pump(client_read, server_write, mode.clone()),
        pump(server_read, client_write, mode),
    )?;
    Ok(())
}

async fn wait_audible(mode: &mut watch::Receiver<Mode>) -> io::Result<()> {
    mode.wait_for(|m| *m != Mode::Silent)
        .await
        .map(drop)
        .map_err(|_| stopped())
}

/// Copies `from` to `to`, holding each chunk while the proxy is silent; on end of stream,
/// shuts down the write side so the peer sees it too.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        wait_audible(&mut mode).await?;
        to.write_all(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;
    use tokio_postgres::{Client, NoTls};

    use super::*;

    const BOUND: Duration = Duration::from_secs(20);

    async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    async fn select_one(client: &Client) -> Result<i32, tokio_postgres::Error> {
        Ok(client.query_one("SELECT 1", &[]).await?.get(0))
    }

    async fn proxy() -> (FaultProxy, tokio_postgres::Config) {
        FaultProxy::in_front_of(&crate::database().config)
            .await
            .expect("the proxy starts")
    }

    #[tokio::test]
    async fn pass_forwards_queries() {
        timeout(BOUND, async {
            let (proxy, config) = proxy().await;
            assert_eq!(proxy.mode(), Mode::Pass);
            let client = connect(&config).await.unwrap();
            assert_eq!(select_one(&client).await.unwrap(), 1);
            let client2 = connect(&config).await.unwrap();
            assert_eq!(select_one(&client2).await.unwrap(), 1);
            assert_eq!(proxy.accepted(), 2);
            assert_eq!(proxy.live(), 2);
        })
        .await
        .expect("bounded");
    }

    #[tokio::test]
    async fn refuse_closes_the_port_and_pass_reopens_it() {
        timeout(BOUND, async {
            let (proxy, config) = proxy().await;
            let live = connect(&config).await.unwrap();
            proxy.set_mode(Mode::Refuse).await.unwrap();
            let refused = TcpStream::connect(proxy.addr()).await.unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
            // the port is still the proxy's: nobody else can listen on it
            assert!(std::net::TcpListener::bind(proxy.addr()).is_err());
            let err = connect(&config).await.map(drop).expect_err("refused");
            assert_eq!(dbmetrics::classify::classify_postgres(&err), "connection");
            assert_eq!(proxy.accepted(), 1);
            // a live connection keeps working
            assert_eq!(select_one(&live).await.unwrap(), 1);
            proxy.set_mode(Mode::Pass).await.unwrap();
            let client = connect(&config).await.unwrap();
            assert_eq!(select_one(&client).await.unwrap(), 1);
            assert_eq!(proxy.accepted(), 2);

            // the proxy closing connections first (its side in TIME_WAIT) does not keep it from
            // refusing and reopening again
            proxy.cut_all().await;
            proxy.set_mode(Mode::Refuse).await.unwrap();
            connect(&config).await.map(drop).expect_err("refused");
            proxy.set_mode(Mode::Pass).await.unwrap();
            let client = connect(&config).await.unwrap();
            assert_eq!(select_one(&client).await.unwrap(), 1);
            assert_eq!(proxy.accepted(), 3);
        })
        .await
        .expect("bounded");
    }

    #[tokio::test]
    async fn silent_accepts_and_never_answers_until_it_passes_again() {
        timeout(BOUND, async {
            let (proxy, config) = proxy().await;
            let live = connect(&config).await.unwrap();
            proxy.set_mode(Mode::Silent).await.unwrap();

            // a new connection is accepted by TCP but the startup never gets an answer
            let stalled = TcpStream::connect(proxy.addr()).await.unwrap();
            let pending = tokio::spawn({
                let config = config.clone();
                async move { connect(&config).await.map(|_| ()) }
            });
            // a live connection stalls too
            let query = live.query_one("SELECT 2", &[]);
            assert!(
                timeout(Duration::from_millis(300), query).await.is_err(),
                "a silent proxy answered a query"
            );
            assert!(!pending.is_finished(), "a silent proxy answered a startup");
            while proxy.accepted() < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }

            // the partition heals: the held connection completes, the live one answers
            proxy.set_mode(Mode::Pass).await.unwrap();
            pending.await.unwrap().unwrap();
            assert_eq!(select_one(&live).await.unwrap(), 1);
            drop(stalled);
        })
        .await
        .expect("bounded");
    }

    #[tokio::test]
    async fn a_closed_port_refuses_connections() {
        let port = ClosedPort::new().unwrap();
        let err = TcpStream::connect(port.addr()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        // the port stays reserved: nobody else can listen on it
        assert!(std::net::TcpListener::bind(port.addr()).is_err());
    }

    #[tokio::test]
    async fn cut_all_closes_every_live_connection() {
        timeout(BOUND, async {
            let (proxy, config) = proxy().await;
            let a = connect(&config).await.unwrap();
            let b = connect(&config).await.unwrap();
            assert_eq!(proxy.live(), 2);
            proxy.cut_all().await;
            assert_eq!(proxy.live(), 0);
            for client in [&a, &b] {
                let err = select_one(client).await.unwrap_err();
                assert_eq!(
                    dbmetrics::classify::classify_postgres(&err),
                    "connection_closed"
                );
            }
            let c = connect(&config).await.unwrap();
            assert_eq!(select_one(&c).await.unwrap(), 1);
            assert_eq!(proxy.accepted(), 3);
            assert_eq!(proxy.live(), 1);
        })
        .await
        .expect("bounded");
    }

    #[tokio::test]
    async fn dropping_the_last_handle_stops_everything() {
        timeout(BOUND, async {
            let (proxy, config) = proxy().await;
            let addr = proxy.addr();
            let client = connect(&config).await.unwrap();
            let clone = proxy.clone();
            drop(proxy);
            assert_eq!(
                select_one(&client).await.unwrap(),
                1,
                "a clone keeps it running"
            );
            drop(clone);
            // the task notices the closed channel and drops the listener and connections
            while !client.is_closed() {
                let _ = select_one(&client).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            loop {
                match TcpStream::connect(addr).await {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await
        .expect("bounded");
    }
}
