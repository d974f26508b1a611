package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

func main() {
	tr := &http.Transport{ExpectContinueTimeout: time.Second, MaxIdleConnsPerHost: 4}
	c := &http.Client{Transport: tr}
	body := bytes.Repeat([]byte("b"), 48<<10)
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 6; i++ {
				for _, path := range []string{"/dav/g%d-%d", "/e417/g", "/other/%d-%d"} {
					p := path
					if bytes.Contains([]byte(path), []byte("%d")) {
						p = fmt.Sprintf(path, w, i)
					}
					req, _ := http.NewRequest("PUT", "http://127.0.0.1:18080"+p, bytes.NewReader(body))
					req.Header.Set("Expect", "100-continue")
					resp, err := c.Do(req)
					if err != nil {
						fmt.Println("err", err)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 417 { // retry without Expect, as RFC 9110 10.1.1 asks
						req2, _ := http.NewRequest("PUT", "http://127.0.0.1:18080"+p, bytes.NewReader(body))
						resp2, err := c.Do(req2)
						if err == nil {
							io.Copy(io.Discard, resp2.Body)
							resp2.Body.Close()
						}
					}
				}
			}
		}(w)
	}
	wg.Wait()
}
