// Hadoop RPC socket factory that binds every outgoing socket to one local address.
//
// On a real cluster each DataNode has its own IP, and the NameNode records a DataNode
// under the source address of its RPC connection. In the test harness all DataNodes
// share one machine and listen on 127.0.0.2, 127.0.0.3, ...; without binding, their
// connections to the NameNode would all come from 127.0.0.1 and every replica would
// look as if it lived on the same host. Configured per DataNode with
//   hadoop.rpc.socket.factory.class.default = BoundSocketFactory
//   stem_explorer.bind.address              = 127.0.0.N
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;

import org.apache.hadoop.conf.Configurable;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.net.StandardSocketFactory;

public class BoundSocketFactory extends StandardSocketFactory implements Configurable {
    private Configuration conf;
    private String bindAddress = "";

    @Override
    public void setConf(Configuration conf) {
        this.conf = conf;
        this.bindAddress = conf.getTrimmed("stem_explorer.bind.address", "");
    }

    @Override
    public Configuration getConf() {
        return conf;
    }

    @Override
    public Socket createSocket() throws IOException {
        Socket socket = super.createSocket();
        if (!bindAddress.isEmpty()) {
            socket.bind(new InetSocketAddress(bindAddress, 0));
        }
        return socket;
    }
}
