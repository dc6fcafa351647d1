// The cluster drill's JDBC client: writes rows 0..n-1 through a JDBC URL with the PostgreSQL
// driver Tessera runs with, reconnecting after an error as a connection pool would. One line
// per attempt on stdout: "ok <k>" or "err <k> <SQLState>". Credentials come from the
// environment (DRILL_DB_USER, DRILL_DB_PASSWORD), never from argv.
// Run: java -cp postgresql.jar JdbcWriter.java <jdbc-url> <n> <pause-ms>

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.SQLException;

public class JdbcWriter {
  public static void main(String[] args) throws Exception {
    String url = args[0];
    int n = Integer.parseInt(args[1]);
    long pauseMs = Long.parseLong(args[2]);
    String user = System.getenv("DRILL_DB_USER");
    String password = System.getenv("DRILL_DB_PASSWORD");
    long deadline = System.nanoTime() + 120_000_000_000L;
    Connection c = null;
    for (int k = 0; k < n; k++) {
      while (true) {
        try {
          if (c == null) {
            c = DriverManager.getConnection(url, user, password);
          }
          try (PreparedStatement s =
              c.prepareStatement(
                  "INSERT INTO cluster_drill_jdbc VALUES (?) ON CONFLICT DO NOTHING")) {
            s.setInt(1, k);
            s.executeUpdate();
          }
          System.out.println("ok " + k);
          System.out.flush();
          break;
        } catch (SQLException e) {
          System.out.println("err " + k + " " + e.getSQLState());
          System.out.flush();
          if (c != null) {
            try {
              c.close();
            } catch (SQLException ignored) {
              // the connection is gone either way
            }
            c = null;
          }
          if (System.nanoTime() > deadline) {
            System.exit(3);
          }
          Thread.sleep(100);
        }
      }
      Thread.sleep(pauseMs);
    }
  }
}
