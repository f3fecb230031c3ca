use stakplane::net::TcpListener;
use stakplane::rt::{Exit, Runtime};
use std::io::{Read, Write};

#[test]
fn smoke_async_echo() {
    let mut rt = Runtime::new().unwrap();
    let io = rt.io();
    let mut l = TcpListener::bind(&io, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        buf
    });
    let exit = rt
        .run(|rt| {
            let _ = stakplane::task::spawn(rt.core(), async move {
                let (mut s, _) = l.accept().await.unwrap();
                drop(l);
                let mut buf = [0u8; 5];
                let mut got = 0;
                while got < 5 {
                    got += s.read(&mut buf[got..]).await.unwrap();
                }
                s.write_all(&buf).await.unwrap();
            });
        })
        .unwrap();
    assert_eq!(exit, Exit::Done);
    assert_eq!(&client.join().unwrap(), b"hello");
}
